"""`gridtwin pki`: the site PKI (init, issue, rotate, revoke, list, crl)."""

from __future__ import annotations

import argparse

from gridtwin.errors import UsageError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION")
    p = sub.add_parser(
        "init", help="create the CA, the broker's server certificate and the service identities"
    )
    p.add_argument(
        "--force",
        action="store_true",
        help="replace an existing CA (old PKI moves to certs/_backup/)",
    )
    p.add_argument(
        "--nodes", action="store_true", help="also issue a certificate for every node of the site"
    )
    p = sub.add_parser(
        "issue",
        help="issue a certificate for a node or service (PEM for the host, DER for the board)",
    )
    p.add_argument("identity", nargs="?", help="node id or service name")
    p.add_argument(
        "--all", action="store_true", help="every site node (and service) that has none yet"
    )
    p.add_argument(
        "--opcua",
        metavar="NAME",
        help="an OPC UA application certificate (RSA 2048, its application URI in subjectAltName) "
        "for NAME: server, collector or another client; revoke it as opcua/NAME",
    )
    p.add_argument(
        "--force",
        action="store_true",
        help="replace an existing one (old pair moves to certs/_backup/)",
    )
    p = sub.add_parser("rotate", help="new key and certificate; old pair to a timestamped backup")
    p.add_argument("identity", help="node id, service name, or 'all'")
    p.add_argument(
        "--revoke-old",
        action="store_true",
        help="revoke the old certificate at once (default: keep it valid until the board has the "
        "new one)",
    )
    p = sub.add_parser("revoke", help="revoke a certificate, re-sign the CRL and tell the broker")
    p.add_argument("identity")
    p.add_argument(
        "--serial",
        type=int,
        help="revoke this older serial of the identity instead of the current one",
    )
    p = sub.add_parser("list", help="identity, serial, expiry, status")
    p.add_argument("--all", action="store_true", help="also superseded and revoked certificates")
    sub.add_parser("crl", help="re-sign the CRL (next update moves ahead)")


def run(args) -> int:
    from gridtwin import broker
    from gridtwin.pki import PKI, SERVER_IDENTITY
    from gridtwin.site import load_site

    if not getattr(args, "action", None):
        raise UsageError("say what to do: gridtwin pki init|issue|rotate|revoke|list|crl")
    site = load_site(args.site)
    pki = PKI.for_site(site)
    if args.action == "init":
        created = pki.init(site, force=args.force)
        if args.nodes:
            for node_id in site.node_ids:
                pki.issue(node_id)
                created.append(node_id)
        print(f"CA and certificates in {pki.dir}: {', '.join(created)}")
        if not args.nodes:
            print(
                "next: `gridtwin pki issue --all` for the nodes, then `gridtwin broker run` or "
                "`broker install`"
            )
    elif args.action == "issue":
        if args.all + bool(args.identity) + bool(args.opcua) != 1:
            raise UsageError(
                "give one identity or --all (or --opcua NAME)",
                hint="e.g. gridtwin pki issue pdu_a",
            )
        if args.opcua:
            from gridtwin.opcua import certs

            ident = certs.issue_named(pki, site, args.opcua, force=args.force)
            print(
                f"opcua/{args.opcua}: {ident.cert_der} + {ident.key_pem} (RSA 2048, {ident.uri}, "
                "signed by the site CA)"
            )
        elif args.all:
            created = pki.ensure(site)
            print(f"issued: {', '.join(created) or 'nothing (all present)'}")
        else:
            folder = pki.issue(args.identity, force=args.force)
            print(
                f"{args.identity}: {folder}/cert.pem + key.pem (host), cert.der + key.der (board)"
            )
    elif args.action == "rotate":
        foreign = set(pki.foreign())
        rotated = pki.rotate(args.identity, revoke_old=args.revoke_old)
        for identity, backup in rotated:
            print(
                f"{identity}: new key and certificate; old pair in {backup}"
                + (" (it was not from this CA)" if identity in foreign else "")
            )
        server = any(i == SERVER_IDENTITY for i, _ in rotated)
        if args.revoke_old or server:
            print(
                broker.notify_revocation(site)
            )  # a new CRL or server certificate: the broker restarts
        if server and broker.installed_by_us():
            print(
                "the installed broker keeps its copy of the old server certificate until "
                "`sudo gridtwin broker install` copies the new one and restarts it"
            )
        if not args.revoke_old and any(i not in foreign for i, _ in rotated):
            print(
                "the old certificates stay valid until revoked: deploy the new ones, then "
                "`gridtwin pki revoke ID --serial OLD` (serials in `pki list --all`)"
            )
        print(
            "deploy the new pairs: `gridtwin deploy --node NODE --port /dev/ttyACM0` for a board; "
            "virtual nodes (`vnode`, `demo`) take theirs at start"
        )
    elif args.action == "revoke":
        serials = pki.revoke(args.identity, serial=args.serial)
        print(
            f"{args.identity}: revoked serial {', '.join(map(str, serials))}; CRL re-signed "
            f"({pki.crl_path})"
        )
        print(broker.notify_revocation(site))
    elif args.action == "list":  # statuses verify each certificate against the current CA and CRL
        rows = pki.list(include_old=args.all)
        width = max(len(r.identity) for r in rows)
        print(f"{'identity':<{width}}  {'kind':<7}  {'serial':<40}  {'expires':<10}  status")
        for r in rows:
            print(
                f"{r.identity:<{width}}  {r.kind:<7}  {r.serial:<40x}  {r.not_after:%Y-%m-%d}  "
                f"{r.status}"
            )
        for w in pki.warnings():
            print(f"warning: {w}")
    elif args.action == "crl":
        path = pki.refresh_crl()
        print(f"CRL re-signed: {path} (next update {pki.crl_next_update():%Y-%m-%d})")
        print(broker.notify_revocation(site))
    return 0
