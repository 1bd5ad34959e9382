"""Push delivery: queues to webhook endpoints, at least once.

A webhook is one more consumer of its queue: it claims messages exactly like a REST
consumer (so the two compete and each message goes to one of them), pushes, and settles.
The database holds all state -- the claim and its expiry on the message, the retry gate,
the runner lease and the endpoint's health on the subscription -- so a lost Celery task,
a flushed Redis or a killed worker delays delivery but loses nothing: claims and leases
run out, and the periodic sweep starts a run for every subscription with work due.

A run holds the subscription's lease (one runner at a time keeps the queue's order) and
works in rounds: it claims up to MESH_WEBHOOK_PREFETCH messages in one statement, pushes
them in order over one kept-alive connection, and settles the round in one transaction
(acknowledgements, the attempt log, the endpoint's health and the lease). A crash between
a push and its settle redelivers that message, as a crash between a push and an ack would.

A failed push gives the message back with a backoff (its claim's expiry becomes the retry
time), gives back unpushed ones as they were, and closes the subscription's gate until the
same instant, so an endpoint sees at most one attempt per backoff step -- never a hot loop.
Each claim counts as a delivery, so after the first delivery and `maxRedeliveryCount`
redeliveries a poison message moves to the dead message queue with the last response as
the reason. After a resume, the backlog goes out at a controlled rate that doubles every
few seconds (slow start), so an endpoint coming back is not flooded.

The package is split by stage: `lease` (time budgets, transactions, the runner lease),
`claim`, `pushing` (the POST), `settle`, and `run` (a run's rounds, and finding work).
Everything callers use is importable from here; a test that replaces a name does it in
the stage module that reads it (`run.push`, `run._extend_claims`, `lease.LOCK_MARGIN`,
`pushing._headers`, `pushing._local`), since replacing the name here reaches no caller.
"""

from .claim import Round, _claim, _extend_claims
from .lease import LOCK_MARGIN, _engine_transaction, _has_available, _lease_seconds, _push_budget, _take_lease
from .pushing import QOS0_MAX_IDLE, Outcome, _headers, _retry_after, _thread_session, push
from .run import RunResult, attempts_prune, resume_rate, wake_webhooks, webhook_deliver_batch, webhooks_due
from .settle import _settle, backoff_seconds

__all__ = [
    "LOCK_MARGIN",
    "QOS0_MAX_IDLE",
    "Outcome",
    "Round",
    "RunResult",
    "_claim",
    "_engine_transaction",
    "_extend_claims",
    "_has_available",
    "_headers",
    "_lease_seconds",
    "_push_budget",
    "_retry_after",
    "_settle",
    "_take_lease",
    "_thread_session",
    "attempts_prune",
    "backoff_seconds",
    "push",
    "resume_rate",
    "wake_webhooks",
    "webhook_deliver_batch",
    "webhooks_due",
]
