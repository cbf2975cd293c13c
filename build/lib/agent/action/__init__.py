"""One small module per agent message; the registry is agent.dispatcher.ACTIONS."""
