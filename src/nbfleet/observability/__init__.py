"""What an operator sees of a running nbfleet: metrics (``metrics``), structured logs with request ids
(``logs``, ``context``) and the audit trail of state-changing calls (``audit``). Call sites elsewhere stay
one line each; the label sets are bounded here, never by the caller."""
