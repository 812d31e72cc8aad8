"""The stages the shared loop trains: each module has make_stage(config) and check_config(config)."""
