# Roles: what a node is. A sensing role reads chips; a simulated component role (the data-centre
# chain) keeps local state that commands change. ROLES maps a config "role" to its module, which
# defines Role (a subclass of gt.roles.base.Role). Only the chosen role's module is imported.
ROLES = {
    "sensor": "gt.roles.base",
    "grid_monitor": "gt.roles.sensing",
    "electrolyser": "gt.roles.sensing",
    "pv": "gt.roles.sensing",
    # the data-centre chain: simulated components with local state (gt/roles/plant.py)
    "utility": "gt.roles.plant",
    "transformer": "gt.roles.plant",
    "switchgear": "gt.roles.plant",
    "generator": "gt.roles.plant",
    "distribution": "gt.roles.plant",
    "ups": "gt.roles.plant",
    "pdu": "gt.roles.plant",
    "server": "gt.roles.plant",
}


def load(name, app):
    mod = __import__(ROLES[name], None, None, ("Role",))
    return mod.Role(app)
