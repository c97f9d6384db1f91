# Roles: what a node is. A sensing role reads chips; a simulated component role (the data-centre
# chain) keeps local state that commands change. ROLES maps a config "role" to its module, which
# defines Role (a subclass of gt.roles.base.Role). Only the chosen role's module is imported.
ROLES = {
    "sensor": "gt.roles.base",
}


def load(name, app):
    mod = __import__(ROLES[name], None, None, ("Role",))
    return mod.Role(app)
