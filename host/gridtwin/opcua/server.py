"""`gridtwin opcua serve`: the running twin as an OPC UA server (asyncua), organised by ISA-95.

Address space, under the namespace ``[opcua] namespace`` (default ``urn:gridtwin:<site>:isa95``)::

    Objects/<enterprise>/<site>/<area>/<line>/<machine>/<tag>      (gridtwin/opcua/model.py)

every level an Object, every tag a Variable with the string NodeId ``ns=<i>;s=<path>.<tag>``
(stable: a collector's mapping survives restarts), a Double (a state: a String; a 0/1 flag: a
Boolean), and for a quantity its ``EngineeringUnits`` property (EUInformation, UNECE code). Every
`publish()` writes the twin's current state into the variables with a source timestamp and a status
code from the component's state (GOOD: Good, UNCERTAIN: Uncertain, BAD: BadOutOfService).

Security: only the policies and modes of ``[opcua] policies``/``modes`` (Basic256Sha256 and
Aes128_Sha256_RsaOaep, Sign and SignAndEncrypt); the None endpoint exists only with ``dev=True``
(`serve --dev`). The server's certificate is the site PKI's OPC UA identity ``server``
(gridtwin/opcua/certs.py), and a client must present one the site CA signed and its CRL does not
revoke: asyncua's validator with the site's trust list refuses any other session.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time

from gridtwin.opcua import certs, model

QUALITY_CODE = {
    "GOOD": 0x00000000,
    "UNCERTAIN": 0x40000000,
    "BAD": 0x808D0000,
}  # Good, Uncertain, BadOutOfService
POLICY_NAMES = {"Basic256Sha256": "Basic256Sha256", "Aes128_Sha256_RsaOaep": "Aes128Sha256RsaOaep"}

# asyncua logs every refused handshake with a traceback at ERROR/WARNING: what we say is enough
for _name in ("asyncua", "asyncua.server", "asyncua.client"):
    logging.getLogger(_name).setLevel(logging.CRITICAL)


def namespace_uri(site) -> str:
    return site.opcua.namespace or f"urn:gridtwin:{site.id}:isa95"


def security_policies(site, dev: bool) -> list:
    from asyncua import ua

    out = [
        getattr(ua.SecurityPolicyType, f"{POLICY_NAMES[p]}_{m}")
        for p in site.opcua.policies
        for m in site.opcua.modes
    ]
    return out + ([ua.SecurityPolicyType.NoSecurity] if dev else [])


class TwinServer:
    """The twin's assets on an asyncua Server. `start()`, then `publish()` after each twin step."""

    def __init__(self, site, twin, pki, endpoint: str | None = None, dev: bool = False):
        self.site, self.twin, self.pki, self.dev = site, twin, pki, dev
        self.endpoint = endpoint or site.opcua.endpoint
        self.server = None
        self.vars: list[tuple[model.Point, object]] = []
        self.published = 0

    async def start(self) -> None:
        from asyncua import Server, ua

        ident = certs.issue(
            self.pki,
            certs.SERVER,
            certs.application_uri(self.site.id, certs.SERVER),
            *certs.endpoint_names(self.endpoint),
        )
        srv = Server()
        await srv.init()
        srv.set_endpoint(self.endpoint)
        srv.set_server_name(f"GridTwin {self.site.id}")
        await srv.set_application_uri(ident.uri)
        srv.set_security_policy(security_policies(self.site, self.dev))
        await srv.load_certificate(str(ident.cert_der))
        await srv.load_private_key(str(ident.key_pem))
        validator = certs.validator(self.pki, "client")
        srv.set_certificate_validator(validator)
        idx = await srv.register_namespace(namespace_uri(self.site))
        cfg = self.site.opcua
        folders: dict[tuple, object] = {(): srv.nodes.objects}
        for p in model.points(self.twin, self.site.id, cfg.enterprise, cfg.area):
            for depth in range(1, len(p.path) + 1):
                key = p.path[:depth]
                if key not in folders:
                    folders[key] = await folders[key[:-1]].add_object(
                        ua.NodeId(".".join(key), idx), ua.QualifiedName(key[-1], idx)
                    )
            nid = ua.NodeId(p.key, idx)
            if p.text:
                var = await folders[p.path].add_variable(
                    nid, ua.QualifiedName(p.tag, idx), "", ua.VariantType.String
                )
            elif p.flag:
                var = await folders[p.path].add_variable(
                    nid, ua.QualifiedName(p.tag, idx), False, ua.VariantType.Boolean
                )
            else:
                var = await folders[p.path].add_variable(
                    nid, ua.QualifiedName(p.tag, idx), 0.0, ua.VariantType.Double
                )
                eu = ua.EUInformation(
                    NamespaceUri="http://www.opcfoundation.org/UA/units/un/cefact",
                    UnitId=model.unit_id(p.unit),
                    DisplayName=ua.LocalizedText(p.unit),
                    Description=ua.LocalizedText(p.unit),
                )
                await var.add_property(
                    ua.NodeId(p.key + ".EngineeringUnits", idx),
                    ua.QualifiedName("EngineeringUnits", 0),
                    eu,
                    datatype=ua.NodeId(ua.ObjectIds.EUInformation),
                )
            self.vars.append((p, var.nodeid))
        await srv.start()
        _check_channel_certificates(srv, validator)
        if not self.dev:
            _deny_none_channels(srv)
        self.server = srv
        await self.publish()

    async def publish(self, state: dict | None = None) -> int:
        """Write the twin's current state (or `state`, one the caller took) into every variable;
        returns how many were written."""
        from asyncua import ua

        state = self.twin.state() if state is None else state
        now = dt.datetime.now(dt.timezone.utc)
        for p, nid in self.vars:
            st = state[p.path[-1]]
            code = ua.StatusCode(QUALITY_CODE[model.quality(st["status"])])
            if p.text:
                value = ua.Variant(st["status"], ua.VariantType.String)
            elif p.flag:
                value = ua.Variant(bool(st["m"].get(p.metric)), ua.VariantType.Boolean)
            else:
                value = ua.Variant(float(st["m"].get(p.metric, 0.0)), ua.VariantType.Double)
            await self.server.write_attribute_value(
                nid, ua.DataValue(value, StatusCode=code, SourceTimestamp=now, ServerTimestamp=now)
            )
        self.published += 1
        return len(self.vars)

    async def stop(self) -> None:
        if self.server is not None:
            srv, self.server = self.server, None
            await srv.stop()

    async def run(self, stop: asyncio.Event, speed: float | None = None) -> None:
        """Step the twin against the wall clock at `speed` and publish every [opcua] publish_ms."""
        speed = self.twin.speed if speed is None else speed
        period = self.site.opcua.publish_ms / 1000.0
        t0, sim0 = time.monotonic(), self.twin.t
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), period)
            except asyncio.TimeoutError:
                pass
            self.twin.run_until(sim0 + (time.monotonic() - t0) * speed)
            await self.publish()


def _check_channel_certificates(srv, validator) -> None:
    """Refuse every service on a secure channel whose client certificate the site CA did not sign or
    the CRL revokes.

    asyncua 2.1 validates only the certificate a client shows in CreateSession, not the one that
    opened the secure channel, and proves possession against the channel's: a client with a foreign
    key could open the channel with it, show the site's (public) collector certificate in
    CreateSession and read everything (tests/host/test_opcua.py reproduces it). So each channel's
    certificate is checked against the site's trust list when it opens, and an untrusted one gets
    a policy whose permission ruleset refuses every service (BadUserAccessDenied). The channel
    itself stays open so an honest client with a foreign certificate still hears why in
    CreateSession (BadCertificateUntrusted) instead of waiting for a timeout."""
    from asyncua.crypto.security_policies import SecurityPolicyFactory, SecurityPolicyNone
    from cryptography import x509

    store = validator._trust_store
    deny = _DenyAll()

    class Checked(SecurityPolicyFactory):
        def create(self, peer_certificate):
            policy = super().create(peer_certificate)
            if self.cls is not SecurityPolicyNone:
                try:
                    cert = (
                        x509.load_der_x509_certificate(peer_certificate)
                        if peer_certificate
                        else None
                    )
                except ValueError:
                    cert = None
                if cert is None or not store.is_trusted(cert) or store.is_revoked(cert):
                    policy.permissions = deny
            return policy

    for factory in srv._policies:
        factory.__class__ = Checked


def _deny_none_channels(srv) -> None:
    """Refuse every service on a secure channel opened with security None.

    asyncua 2.1 keeps a None channel open even when no None endpoint is offered (GetEndpoints needs
    one), and then lets a client that skips its own endpoint check create and activate a session on
    it and read everything (tests/host/test_opcua.py reproduces it). Every request after the
    session's own is checked against the channel policy's permission ruleset, so a None policy
    whose ruleset refuses everything closes that hole; it is added after start(), when the
    endpoints are already built, so no None endpoint is advertised. Discovery (GetEndpoints,
    FindServers) stays open, as OPC UA requires. ``_policies`` is asyncua's own list (pinned 2.1.0),
    the one its binary server hands to each connection."""
    from asyncua import ua
    from asyncua.crypto.security_policies import SecurityPolicyFactory, SecurityPolicyNone

    srv._policies.append(
        SecurityPolicyFactory(
            SecurityPolicyNone, ua.MessageSecurityMode.None_, permission_ruleset=_DenyAll()
        )
    )


class _DenyAll:
    """A permission ruleset that refuses every service (asyncua's PermissionRuleset interface)."""

    def check_validity(self, user, action_type, body) -> bool:
        return False
