"""Many sites: which one a player should reach (ranking), where the site records come from (registry:
this node alone, a TOML file, or Redis), and the HTTP lookup that answers with them (http)."""
