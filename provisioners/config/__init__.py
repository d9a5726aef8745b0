"""The inputs: settings (options), the phoenix config + profiles, the engine config, layout."""
