"""The Live link: one conversation with the Gemini Live API across many connections.

`session` keeps a session alive across connections (reconnect, resume, goAway);
`connection` serves one WebSocket; `turn` tracks what is in flight on the wire;
`setup` builds the SDK client and the session setup; `models` holds what each
model accepts; `errors` puts a failure into words an owner can act on; `wire`
holds the facts of the protocol everything else shares; `client` sends a text
turn and collects its reply (ask, doctor, tests). Importing this package imports
nothing: the SDK comes in only with the modules that need it.
"""
