"""SIP over TLS (RFC 3261 §26.2.1, RFC 5630): the TCP transport with TLS contexts, and a self-signed
certificate for local use.

Connections are reused exactly as for TCP (§18.2.2, RFC 5923's idea without its alias header): a
response or in-dialog request to a peer goes back over the connection that peer opened, so a phone
behind NAT needs no certificate of its own. Only when no connection is open do we connect out, and
then the peer's certificate is verified against ``sip.tls_ca`` when it is set (hostname checked
against the address we connect to); without it the channel is encrypted but the peer unauthenticated
— the usual PBX default, since phones rarely carry certificates a server could check.
"""

from __future__ import annotations

import datetime
import ipaddress
import logging
import ssl
from pathlib import Path

from callcenter.core.errors import ConfigError
from callcenter.core.logging import log_event
from callcenter.sip.transaction import Addr
from callcenter.sip.transport.limits import ConnectionLimits
from callcenter.sip.transport.tcp import BadRequestSink, MessageSink, TcpTransport

log = logging.getLogger("callcenter.sip.tls")

DEFAULT_TLS_PORT = 5061


def server_context(cert: str | Path, key: str | Path) -> ssl.SSLContext:
    """A server context with our certificate chain; raises ConfigError naming a file that won't load."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(str(cert), str(key))
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"sip.tls_cert/sip.tls_key: cannot load {cert} / {key}: {exc}") from None
    return context


def peer_context(ca: str | Path | None, verify: bool) -> ssl.SSLContext:
    """A client context for a peer whose certificate must verify (the trunk): against ``ca`` when
    given, else the system's CAs, host name checked; ``verify=False`` only encrypts."""
    if not verify:
        return client_context(None)
    if ca is not None:
        return client_context(ca)
    context = ssl.create_default_context()
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def client_context(ca: str | Path | None) -> ssl.SSLContext:
    """A client context: verifying against ``ca`` when given, else encrypting without verifying."""
    if ca is None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    else:
        try:
            context = ssl.create_default_context(cafile=str(ca))
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"sip.tls_ca: cannot load {ca}: {exc}") from None
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


class TlsTransport(TcpTransport):
    """All TLS connections of the endpoint; Addr.transport is "tls"."""

    name = "tls"

    def __init__(
        self,
        on_message: MessageSink,
        on_bad_request: BadRequestSink,
        max_size: int,
        *,
        server: ssl.SSLContext | None,
        client: ssl.SSLContext,
        verify: bool,
        limits: ConnectionLimits | None = None,
    ) -> None:
        super().__init__(on_message, on_bad_request, max_size, limits)
        self._server = server
        self._client = client
        self._verify = verify
        # Peers with a policy of their own (the trunk): (host, port) → (context, name to verify).
        self._peers: dict[tuple[str, int], tuple[ssl.SSLContext, str | None]] = {}

    def set_peer(self, host: str, port: int, context: ssl.SSLContext, server_hostname: str | None) -> None:
        """Connect to ``host``:``port`` with ``context``, checking the certificate names
        ``server_hostname`` (the name the admin configured, RFC 5922 §7.2; None when ``context`` does
        not verify). A connection already open to that peer is kept."""
        self._peers[(host, port)] = (context, server_hostname if context.check_hostname else None)

    def _server_ssl(self) -> ssl.SSLContext | None:
        if self._server is None:
            raise ConfigError("sip.transports has tls but sip.tls_cert / sip.tls_key are not set")
        return self._server

    def _connect_failed(self, dest: Addr, unsent: list[bytes], error: str) -> None:
        peer = self._peers.get((dest.host, dest.port))
        if peer is not None:
            # A configured peer (the trunk) we could not reach or did not trust: one clear line with the
            # reason and the settings to check, once per attempt however many calls waited for it.
            log_event(
                log,
                "trunk_tls_failed",
                level=logging.WARNING,
                dest=str(dest),
                server_name=peer[1],
                verified=peer[0].verify_mode != ssl.CERT_NONE,
                error=error,
                hint="check the peer's certificate against sip.tls_ca (sip.trunk.tls_verify: false skips it)",
            )
        super()._connect_failed(dest, unsent, error)

    def _client_ssl(self, dest: Addr) -> tuple[ssl.SSLContext | None, str | None]:
        peer = self._peers.get((dest.host, dest.port))
        if peer is not None:
            return peer
        # With verification the certificate must name the address we connect to (an IP SAN, or the
        # host name when the Addr carries one).
        return self._client, dest.host if self._verify else None


def make_self_signed(
    out_dir: Path, hosts: list[str], *, days: int = 825, now: datetime.datetime | None = None
) -> tuple[Path, Path]:
    """Write ``cert.pem`` and ``key.pem`` (EC P-256, mode 0600) for ``hosts`` (names and IPs, the
    first is the CN) into ``out_dir``; returns their paths. For local use and tests only."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    if not hosts:
        raise ValueError("a certificate needs at least one host name or address")
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])])
    alt: list[x509.GeneralName] = []
    for host in hosts:
        try:
            alt.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            alt.append(x509.DNSName(host))
    start = now or datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start - datetime.timedelta(minutes=5))
        .not_valid_after(start + datetime.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(alt), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = out_dir / "cert.pem", out_dir / "key.pem"
    key_bytes = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    key_path.touch(mode=0o600)
    key_path.chmod(0o600)
    key_path.write_bytes(key_bytes)
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert_path, key_path
