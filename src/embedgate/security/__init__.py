"""Security built in: identities (API keys, JWT), roles and grants, rate limits, audit."""
