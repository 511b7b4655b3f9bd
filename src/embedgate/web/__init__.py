"""The web console at /ui/: static files the server serves itself (no CDN, no build step).

The console is a client of the public JSON API and nothing else: it signs in with an API
key, sends it as a bearer token, and shows what that key's role allows. Every rule is still
enforced by the API, so anything the console does, the key can do with curl, and no more.
"""
