# Renders BOSH job templates with Ruby's own ERB, as the 2013 agent and director did.
# stdin:  {"spec": {... apply spec with "properties" ...},
#          "jobs": [{"name": "redis", "templates": {"config/redis.conf.erb": "<source>", ...}}]}
# stdout (the result channel): one JSON object a line, each template announced before it runs
#             {"rendering": {"job": "...", "template": "..."}}
#         then the result: {"rendered": {"redis": {"config/redis.conf.erb": "<output>", ...}}}
#                      or  {"error": {"job": "...", "template": "...", "property": "..." | null, "message": "..."}}
# Templates cannot write on that channel: before any of them runs, the channel moves to a new descriptor and
# fd 1 (STDOUT, $stdout, and child processes' stdout) becomes stderr.
require "erb"
require "json"
require "ostruct"

class UnknownProperty < StandardError
  attr_reader :name
  def initialize(names)
    @name = Array(names).join(", ")
    super("Can't find property '#{@name}'")
  end
end

def open_struct(obj)
  case obj
  when Hash then OpenStruct.new(obj.transform_values { |v| open_struct(v) })
  when Array then obj.map { |v| open_struct(v) }
  else obj
  end
end

class ActiveElseBlock
  def initialize(template) @template = template end
  def else; yield; end
  def else_if_p(*names, &block) @template.if_p(*names, &block) end
end

class InactiveElseBlock
  def else; end
  def else_if_p(*_names) self end
end

# The template evaluation context: p, if_p, spec, properties, name, index (Bosh::Common::TemplateEvaluationContext).
class EvaluationContext
  attr_reader :spec, :raw_properties, :name, :index, :properties

  def initialize(spec)
    @raw_properties = spec["properties"] || {}
    @name = spec["job"].is_a?(Hash) ? spec["job"]["name"] : nil
    @index = spec["index"]
    @spec = open_struct(spec)
    @properties = open_struct(@raw_properties)
  end

  def get_binding; binding; end

  def lookup_property(collection, name)
    name.to_s.split(".").reduce(collection) do |obj, key|
      return nil unless obj.is_a?(Hash) && obj.key?(key)
      obj[key]
    end
  end

  def p(*args)
    names = Array(args[0])
    names.each do |n|
      v = lookup_property(@raw_properties, n)
      return v unless v.nil?
    end
    return args[1] if args.length == 2
    raise UnknownProperty.new(names)
  end

  def if_p(*names)
    values = names.map do |n|
      v = lookup_property(@raw_properties, n)
      return ActiveElseBlock.new(self) if v.nil?   # the block does not run: its else does
      v
    end
    yield(*values)
    InactiveElseBlock.new
  end
end

RESULT = STDOUT.dup          # close-on-exec, like every descriptor Ruby opens
RESULT.sync = true
STDOUT.reopen(STDERR)
$stdout = STDOUT

def result(obj)
  RESULT.write(JSON.generate(obj) + "\n")
end

input = JSON.parse($stdin.read)
spec = input.fetch("spec")
out = {}
input.fetch("jobs").each do |job|
  context = EvaluationContext.new(spec)
  out[job["name"]] = {}
  job.fetch("templates").each do |template_name, source|
    result({"rendering" => {"job" => job["name"], "template" => template_name}})
    begin
      erb = ERB.new(source, trim_mode: "-")
      erb.filename = template_name
      out[job["name"]][template_name] = erb.result(context.get_binding)
    rescue UnknownProperty => e
      result({"error" => {"job" => job["name"], "template" => template_name, "property" => e.name,
                          "message" => e.message}})
      exit 0
    rescue Exception => e
      line = (e.backtrace || []).find { |l| l.start_with?(template_name) }
      where = line ? " (#{line.split(':in').first})" : ""
      result({"error" => {"job" => job["name"], "template" => template_name, "property" => nil,
                          "message" => "#{e.class}: #{e.message}#{where}"}})
      exit 0
    end
  end
end
result({"rendered" => out})
