"""Certificates and kubeconfigs for the lab (real TLS, generated with `cryptography`).

Layout under ``<state>/pki``: ``ca.{crt,key}``, ``front-proxy-ca.{crt,key}``,
``sa.{key,pub}`` and one ``<name>.{crt,key}`` per identity. Keys are written 0600.
"""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from .config import LabConfig

_VALIDITY = dt.timedelta(days=365)


@dataclass(frozen=True)
class KeyPair:
    cert: Path
    key: Path


def _write(path: Path, data: bytes, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    path.chmod(mode)


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _load(pair: KeyPair) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    cert = x509.load_pem_x509_certificate(pair.cert.read_bytes())
    key = serialization.load_pem_private_key(pair.key.read_bytes(), password=None)
    return cert, key  # type: ignore[return-value]


def create_ca(directory: Path, name: str, common_name: str) -> KeyPair:
    pair = KeyPair(directory / f"{name}.crt", directory / f"{name}.key")
    if pair.cert.exists() and pair.key.exists():
        return pair
    key = _new_key()
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + _VALIDITY * 10)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, key_cert_sign=True, crl_sign=True,
                content_commitment=False, key_encipherment=False, data_encipherment=False,
                key_agreement=False, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    _write(pair.key, _key_pem(key), 0o600)
    _write(pair.cert, cert.public_bytes(serialization.Encoding.PEM))
    return pair


def issue(
    ca: KeyPair,
    directory: Path,
    name: str,
    common_name: str,
    organizations: tuple[str, ...] = (),
    sans: tuple[str, ...] = (),
    server: bool = False,
    client: bool = True,
) -> KeyPair:
    """Issue a leaf certificate signed by ``ca`` (idempotent: existing files are kept)."""
    pair = KeyPair(directory / f"{name}.crt", directory / f"{name}.key")
    if pair.cert.exists() and pair.key.exists():
        return pair
    ca_cert, ca_key = _load(ca)
    key = _new_key()
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in organizations]
    attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    usages = []
    if server:
        usages.append(ExtendedKeyUsageOID.SERVER_AUTH)
    if client:
        usages.append(ExtendedKeyUsageOID.CLIENT_AUTH)
    now = dt.datetime.now(dt.timezone.utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name(attrs))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + _VALIDITY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
    )
    if sans:
        names: list[x509.GeneralName] = []
        for san in sans:
            try:
                names.append(x509.IPAddress(ipaddress.ip_address(san)))
            except ValueError:
                names.append(x509.DNSName(san))
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())
    _write(pair.key, _key_pem(key), 0o600)
    _write(pair.cert, cert.public_bytes(serialization.Encoding.PEM))
    return pair


def service_account_keys(directory: Path) -> tuple[Path, Path]:
    private, public = directory / "sa.key", directory / "sa.pub"
    if not private.exists():
        key = _new_key()
        _write(private, _key_pem(key), 0o600)
        _write(
            public,
            key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            ),
        )
    return private, public


def write_kubeconfig(path: Path, server: str, ca: Path, pair: KeyPair, user: str) -> Path:
    """A kubeconfig with embedded credentials (mode 0600: it is a secret)."""

    def b64(p: Path) -> str:
        return base64.b64encode(p.read_bytes()).decode()

    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "cnilab", "cluster": {"server": server, "certificate-authority-data": b64(ca)}}],
        "users": [{"name": user, "user": {"client-certificate-data": b64(pair.cert), "client-key-data": b64(pair.key)}}],
        "contexts": [{"name": f"{user}@cnilab", "context": {"cluster": "cnilab", "user": user}}],
        "current-context": f"{user}@cnilab",
    }
    _write(path, yaml.safe_dump(doc, sort_keys=False).encode(), 0o600)
    return path


def generate(cfg: LabConfig) -> dict[str, KeyPair]:
    """Create every certificate and key the lab needs; returns them by identity."""
    d = cfg.pki_dir
    ca = create_ca(d, "ca", "cnilab-ca")
    fp_ca = create_ca(d, "front-proxy-ca", "cnilab-front-proxy-ca")
    service_account_keys(d)
    cp = cfg.control_plane
    api_sans = (
        "kubernetes", "kubernetes.default", "kubernetes.default.svc",
        f"kubernetes.default.svc.{cfg.cluster_domain}", "localhost", "127.0.0.1",
        str(cp.ip), str(cfg.kubernetes_service_ip), cp.name,
    )
    pairs = {
        "ca": ca,
        "front-proxy-ca": fp_ca,
        "apiserver": issue(ca, d, "apiserver", "kube-apiserver", sans=api_sans, server=True, client=False),
        "apiserver-kubelet-client": issue(ca, d, "apiserver-kubelet-client", "kube-apiserver-kubelet-client", ("system:masters",)),
        "front-proxy-client": issue(fp_ca, d, "front-proxy-client", "front-proxy-client"),
        "admin": issue(ca, d, "admin", "cnilab-admin", ("system:masters",)),
        "controller-manager": issue(ca, d, "controller-manager", "system:kube-controller-manager"),
        "scheduler": issue(ca, d, "scheduler", "system:kube-scheduler"),
        "kube-proxy": issue(ca, d, "kube-proxy", "system:kube-proxy"),
    }
    for node in cfg.nodes:
        pairs[f"kubelet-{node.name}"] = issue(
            ca, d, f"kubelet-{node.name}", f"system:node:{node.name}", ("system:nodes",),
            sans=(node.name, str(node.ip)), server=True, client=True,
        )
    return pairs
