"""The host daemon (issue #6): ingest that loses nothing, storage, registry, commands.

Entry points: ``Daemon.from_site(site).start()`` / ``.stop()`` (gridtwin.daemon.service),
``SqliteStore(path).query(node, metric, since_ms)`` (gridtwin.daemon.store_sqlite),
``Dispatcher(endpoint, store).send(node, cmd, args, timeout)`` (gridtwin.daemon.dispatch),
``fleet(store, site)`` (gridtwin.daemon.registry).
"""
