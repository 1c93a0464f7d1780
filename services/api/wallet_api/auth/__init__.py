"""Bearer-token (OIDC access token, JWT) authentication and authorization.

Pure: no HTTP framework, no Kafka. The API turns the named errors into responses:
:class:`Unauthorized` is 401, :class:`Forbidden` is 403, and each carries the
``WWW-Authenticate`` value RFC 6750 asks for.

Trust comes only from the configured JWKS (a URL or a file). Whatever a token's
header says about keys (``jku``, ``x5u``, an embedded ``jwk``) is ignored, and only
asymmetric algorithms are accepted: a JWKS publishes public keys, so with an HMAC
algorithm anyone holding the public key could forge tokens.

A request is allowed when the token is valid (:meth:`Authenticator.authenticate`)
and names both the scope of the operation and the wallet (:meth:`Authenticator.authorize`).
Wallets come from a claim (``wallets`` by default): a list of exact wallet ids and
``*`` patterns. A token without that claim may touch no wallet.

The package, by job: ``settings`` (what is configured), ``wallets`` (who may touch which
wallet), ``keys`` (the key set), ``authenticator`` (a request checked), ``errors``.
"""

from wallet_api.auth.authenticator import Authenticator
from wallet_api.auth.errors import (
    AuthConfigError,
    AuthError,
    Forbidden,
    InvalidClaims,
    KeySetError,
    KeysUnavailable,
    Unauthorized,
)
from wallet_api.auth.settings import (
    ASYMMETRIC_ALGORITHMS,
    ENV_VARS,
    MAX_JWKS_BYTES,
    MIN_RSA_BITS,
    REQUIRED_CLAIMS,
    TIME_CLAIMS,
    WALLET_ID_MAX_LENGTH,
    AuthSettings,
    from_env,
    jwks_url_problem,
)
from wallet_api.auth.wallets import NO_WALLETS, Principal, WalletRule

__all__ = [
    "AuthConfigError",
    "KeySetError",
    "AuthError",
    "Unauthorized",
    "KeysUnavailable",
    "Forbidden",
    "InvalidClaims",
    "ASYMMETRIC_ALGORITHMS",
    "MIN_RSA_BITS",
    "REQUIRED_CLAIMS",
    "TIME_CLAIMS",
    "MAX_JWKS_BYTES",
    "WALLET_ID_MAX_LENGTH",
    "ENV_VARS",
    "AuthSettings",
    "jwks_url_problem",
    "from_env",
    "WalletRule",
    "NO_WALLETS",
    "Principal",
    "Authenticator",
]
