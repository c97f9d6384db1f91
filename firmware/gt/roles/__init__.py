# Roles: what a node is. A sensing role reads chips; a simulated component role (the data-centre
# chain) keeps local state that commands change. ROLES maps a config "role" to its module, which
# defines Role (a subclass of gt.roles.base.Role). Only the chosen role's module is imported.
# role -> its module in gt/roles/; the host's one list of roles (gridtwin/site.py reads this literal;
# a role whose module is "plant" is a component of the power chain there too)
ROLES = {
    "sensor": "base",
    "grid_monitor": "sensing",
    "electrolyser": "sensing",
    "pv": "base",  # no derived metric: the plain role (gt/roles/sensing.py's ~2 KB stay out of RAM)
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
