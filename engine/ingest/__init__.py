"""Ingest: Segment events over HTTP (the tracking API) into the JetStream EVENTS stream.

- ``validate``: ``parse_event``, the one validator (also used by decide), ``normalize_for_wire``.
- ``publisher``: ``EventPublisher``, publishes with ``Nats-Msg-Id`` and waits for the ack.
- ``http``: ``build_app`` and ``HttpService`` (tracking API, /metrics, /healthz, /u/{token}).
- ``unsubscribe_pages``: the RFC 8058 one-click unsubscribe pages.

Nothing is imported here, so ``engine.ingest.validate`` stays cheap for the decide stage.
"""
