"""The node's HTTP face, off unless `[api] listen` names an address; the node imports it only then.

    server.py   runs uvicorn inside the node's event loop (a task of the node's TaskGroup, stopped with it)
    app.py      the routes: /v1/query, the read endpoints (status, peers, artifacts, audit, events), the actions
                (revoke, block, quarantine, leave), /metrics and the status page; limits on body size and time
    guard.py    the gate before any route: the token where it is needed, concurrency, body size, time
    auth.py     who may do what: reads open on loopback, everything else behind the home's bearer token
    decode.py   a query's body (one image, or a JSON batch) -> images, bounded before it is parsed
    metrics.py  the node's counters in Prometheus' text format, read from the node's parts at each scrape
    page.html, page.js   the status page (no build step): polls the read endpoints

Every route calls the control handlers (ffnode/daemon/handlers.py) the CLI reaches over the Unix socket, so the
API and `ffnode query`/`status`/... answer alike.
"""
