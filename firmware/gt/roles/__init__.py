# Roles: what a node is. A sensing role reads chips; a simulated component role (the data-centre
# chain) keeps local state that commands change. ROLES maps a config "role" to its module, which
# defines Role (a subclass of gt.roles.base.Role). Only the chosen role's module is imported.
# role -> its module in gt/roles/; the host's one list of roles (gridtwin/site.py reads this
# literal; a role whose module is "plant" is a component of the power chain there too)
ROLES = {
    "sensor": "base",
    "grid_monitor": "grid",
    "electrolyser": "sensing",
    "pv": "base",  # derives nothing: the plain role (no deriving role's code in RAM, issue #20)
    # the data-centre chain: simulated components with local state (gt/roles/plant.py)
    "utility": "plant",
    "transformer": "plant",
    "switchgear": "plant",
    "generator": "plant",
    "distribution": "plant",
    "ups": "plant",
    "pdu": "plant",
    "server": "plant",
}


def load(name, app):
    return __import__("gt.roles." + ROLES[name], None, None, ("Role",)).Role(app)
