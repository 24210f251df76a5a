"""Authoring: what the console's template editor asks of the engine.

- ``library``: stored template versions (list, get, save a new version, diff);
- ``lint``: findings with line numbers (undefined variables, unsubscribe link, postal address,
  Gmail's 102 KB clip, images without alt text, sandbox violations);
- ``preview``: a template rendered as a real contact and event through the deliver stage's own
  composer, so the preview is the message the engine sends;
- ``sample``: sample contacts and events when no real one is chosen;
- ``fields``: the contact traits and event properties seen in the stream, for completion;
- ``operations``: the control verbs, and the notice that makes a save live on every node.
"""
