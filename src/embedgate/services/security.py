"""The security layer built from the server's settings: pepper, keys, JWT, limits, audit.

Also the first-start bootstrap: with an empty key store an admin key is created and written to
`<data_dir>/admin.key` (mode 0600); only the path is logged, never the key.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Engine

from embedgate.config import Settings
from embedgate.security import keys
from embedgate.security.audit import AuditLog, AuditSink, chain_key
from embedgate.security.audit_file import FileAuditSink
from embedgate.security.client_ip import parse_networks
from embedgate.security.gate import Security
from embedgate.security.jwt_auth import JwtConfig, JwtVerifier
from embedgate.security.key_service import KeyService
from embedgate.security.ratelimit import RateLimiter
from embedgate.security.secret_files import load_pepper, read_secret_file, write_secret_file
from embedgate.services.storage import open_configured_database
from embedgate.storage.audit_backlog import SqlAuditBacklog
from embedgate.storage.facts import agree_on
from embedgate.storage.key_store import KeyStore, SqlKeyStore

log = logging.getLogger(__name__)

ADMIN_KEY_FILE = "admin.key"


@dataclass
class SecurityParts:
    security: Security
    audit: AuditLog
    keys: KeyService


def open_audit(settings: Settings, database: Engine, sink: AuditSink | None = None) -> AuditLog:
    if sink is None and not settings.audit:
        log.warning("the audit log is switched off; admin actions will be refused")
        return AuditLog(None)
    if sink is None:
        path = settings.audit_path or settings.data_dir / "audit.jsonl"
        sink = FileAuditSink(path, key=chain_key(_pepper(settings)))
    return AuditLog(
        sink,
        fail_closed=settings.audit_failure_mode == "fail_closed",
        backlog=SqlAuditBacklog(database),
    )


class PepperMismatch(ValueError):
    """This server's pepper is not the one the (shared) database was set up with."""


def key_service(
    settings: Settings, store: KeyStore, audit: AuditLog, database: Engine
) -> KeyService:
    pepper = _pepper(settings)
    check_pepper(settings, database, pepper)
    return KeyService(store, pepper, audit, settings.key_cache_ttl_s)


def audit_chain_key(settings: Settings) -> bytes:
    """The audit chain's key, for `embedgate audit verify` (never creates a pepper)."""
    has_file = settings.pepper_file is not None or (settings.data_dir / "pepper").exists()
    if settings.pepper is None and not has_file:
        raise ValueError(
            "verifying the audit chain needs the server's pepper: run with the same "
            "EMBEDGATE_PEPPER_FILE (or EMBEDGATE_PEPPER, or --data-dir) as the server"
        )
    return chain_key(_pepper(settings))


def _pepper(settings: Settings) -> bytes:
    pepper_env = settings.pepper.get_secret_value() if settings.pepper else None
    return load_pepper(pepper_env, settings.pepper_file, settings.data_dir)


def check_pepper(settings: Settings, database: Engine, pepper: bytes | None = None) -> None:
    """Refuse a pepper the database was not set up with: replicas sharing PostgreSQL must
    share the pepper too, or every key is a 401 on the odd one out."""
    pepper = pepper if pepper is not None else _pepper(settings)
    ours = keys.pepper_check(pepper)
    if agree_on(database, "pepper_check", ours) != ours:
        raise PepperMismatch(
            "this server's pepper does not match the one its database was set up with; give "
            "every replica that shares the database the same EMBEDGATE_PEPPER_FILE (or "
            "EMBEDGATE_PEPPER)"
        )


def jwt_verifier(settings: Settings) -> JwtVerifier | None:
    if not settings.jwt_algorithms:
        return None
    if not settings.jwt_issuer or not settings.jwt_audience:
        raise ValueError("JWT needs jwt_issuer and jwt_audience (exp, iss and aud are required)")
    secret: bytes | None = None
    if settings.jwt_secret is not None:
        secret = settings.jwt_secret.get_secret_value().encode()
    elif settings.jwt_secret_file is not None:
        secret = read_secret_file(settings.jwt_secret_file)
    if any(a.startswith("HS") for a in settings.jwt_algorithms) and secret is None:
        raise ValueError("an HS* JWT algorithm needs EMBEDGATE_JWT_SECRET or jwt_secret_file")
    if any(not a.startswith("HS") for a in settings.jwt_algorithms) and not settings.jwt_jwks_url:
        raise ValueError("RS*/ES*/PS* JWT algorithms need jwt_jwks_url")
    return JwtVerifier(
        JwtConfig(
            algorithms=tuple(settings.jwt_algorithms),
            issuer=settings.jwt_issuer,
            audience=settings.jwt_audience,
            secret=secret,
            jwks_url=settings.jwt_jwks_url,
            role_claim=settings.jwt_role_claim,
            collections_claim=settings.jwt_collections_claim,
            models_claim=settings.jwt_models_claim,
            leeway=settings.jwt_leeway_s,
            jwks_ttl=settings.jwks_ttl_s,
            jwks_refresh_interval=settings.jwks_refresh_interval_s,
        )
    )


def preflight(settings: Settings) -> None:
    """Check secrets and JWT settings before serving, so mistakes are one clear line, not a
    traceback from inside the server (raises ValueError / InsecureSecretFile / OSError)."""
    if settings.pepper_file is not None:
        read_secret_file(settings.pepper_file)
    elif (settings.data_dir / "pepper").exists():
        read_secret_file(settings.data_dir / "pepper")
    jwt_verifier(settings)
    database = open_configured_database(settings)
    try:
        check_pepper(settings, database)
    finally:
        database.dispose()


def build_security(
    settings: Settings,
    *,
    database: Engine,
    store: KeyStore | None = None,
    audit_sink: AuditSink | None = None,
) -> SecurityParts:
    settings.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    audit = open_audit(settings, database, audit_sink)
    keys = key_service(settings, store or SqlKeyStore(database), audit, database)
    redis = settings.redis_url.get_secret_value() if settings.redis_url else None
    security = Security(
        keys=keys,
        limiter=RateLimiter.for_redis(redis, settings.redis_failure_mode),
        trusted_proxies=parse_networks(settings.trusted_proxies),
        jwt=jwt_verifier(settings),
        enabled=settings.auth,
        default_rpm=settings.default_rpm,
        default_tpm=settings.default_tpm,
        failed_auth_per_minute=settings.failed_auth_per_minute,
    )
    return SecurityParts(security, audit, keys)


def ensure_first_admin_key(settings: Settings, keys: KeyService) -> Path | None:
    """The server's first start: with an empty key store, create an admin key and write it
    to `<data_dir>/admin.key` (0600); returns that path, or None when keys exist."""
    if not (settings.auth and settings.audit):
        return None
    issued = keys.ensure_admin_key()
    if issued is None:
        return None
    path = settings.data_dir / ADMIN_KEY_FILE
    write_secret_file(path, issued.key.encode() + b"\n")
    log.warning("created the first admin key", extra={"admin_key_file": str(path)})
    return path
