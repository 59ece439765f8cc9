"""BioMAJ 3's `/api/daemon` routes (biomaj-daemon's daemon-web), so that `biomaj-cli.py --proxy`
and the scripts written for BioMAJ 3 keep working against this server.

`POST /api/daemon` with `{"options": {...}}` is the single entry point of biomaj-cli: it sends
every one of its options (argparse's namespace) and prints the answer's `msg` when `status` is
true. The first option set wins, in BioMAJ 3's order (`utils.py:biomaj_client_action`). With
`json` the `msg` is BioMAJ 3's JSON form (`{"headers": [...], "banks": [[...]]}`...), otherwise
the text biomaj-cli prints: the same tables as `biomaj ctl` (:mod:`biomaj.reports`). The REST
routes under `/api/daemon/...` answer the JSON form, as BioMAJ 3's did.

Operations are ours: jobs (update, remove, remove-all, remove-pending, repair) go to the managers
through :func:`~biomaj.jobs.submit_job`, quick operations (publish, freeze, owner,
visibility) run here through :mod:`biomaj.workflow.runner`, reads use :mod:`biomaj.reports` with
the requester's :func:`~.auth.viewer_of`.

BioMAJ 3 bugs fixed on purpose (reference 2.3, 5.3 and the W list), each noted where it applies:

* errors are real HTTP errors as JSON (`{"error", "status"}`): 400, 401, 403, 404, 409, never a
  200 carrying "401 ..." nor a bare 500 (W21); an unknown option or a wrong type is a 400;
* an API key that matches nobody is a 401, never anonymous (``auth.py``);
* every write needs the bank's owner or an admin, remove-all, cancel included (W32); maintenance
  needs an admin by our admin rules, not config.yml's list;
* reads apply visibility everywhere: status, update status, show, search, stats, history,
  whatsup, check and the log (W33); ``/api/daemon/status`` shows no host to non-admins;
* ``aboutme`` never hands out an API key, and takes no password: the key is the credential (W36);
* task names (``from_task``, ``stop_before``, ``stop_after``) are checked (``check_options`` was
  ignored); ``/api/daemon/search`` works (W21); a cancel without a job is refused instead of
  cancelling the next run (W11); the log path comes from the store and must lie in the bank's log
  directory; ``expose`` binds the login to the key (W31), decodes Basic credentials (W21) and
  normalises the URI (W37);
* the API key biomaj-cli puts in the options body is ignored (the header authenticates) and
  never stored in a job (W29).

Two modules: :mod:`.options` reads biomaj-cli's options and performs them (one ``op_*`` function
per action, in BioMAJ 3's precedence), :mod:`.routes` maps the HTTP routes onto them.
"""

from .routes import api

__all__ = ["api"]
