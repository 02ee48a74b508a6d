"""The worker's WebSocket server, protocol messages, HTTP GET endpoints and web page
(installed as ``orcd_toolkit.server``)."""
