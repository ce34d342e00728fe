"""The read-only web UI: server-rendered HTML pages, no script and no asset from elsewhere.

Pages (under ``/ui/``): jobs (filter by role and state), a job (its tasks with agent,
market, tier, state, why pending, attempts and checkpoint age; its target and why; its
progress over time as an SVG chart; its losses and recoveries; its cost), roles (weights,
guarantees, limits, budgets, fair share against use), agents by market, and the job
history. Live pages refresh themselves every few seconds. Every value from the scheduler
is escaped. With an auth file, ``/ui/login`` takes a bearer token into an HttpOnly,
SameSite=Strict cookie; pages show only the roles the principal may see.
"""

from __future__ import annotations

import html
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlencode

from aiohttp import web

from corral.api.auth import AuthConfig, Principal
from corral.observe.web import STATES, Data, parse_since, query_limit, query_role, query_state
from corral.observe.webauth import allowed_roles

if TYPE_CHECKING:
    from corral.http import HttpServer

REFRESH_SECONDS = 5

CSS = """
:root { --fg:#1d2430; --muted:#5b6577; --line:#dde2ea; --bg:#f6f8fb; --accent:#2459c9; }
* { box-sizing: border-box; }
body { margin:0; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif;
       color: var(--fg); background: var(--bg); }
header { background:#17233b; color:#fff; padding:10px 24px; display:flex; gap:24px;
         align-items:center; }
header b { font-size:16px; letter-spacing:.5px; }
header a { color:#cfe0ff; text-decoration:none; }
header a.on { color:#fff; font-weight:600; }
header .who { margin-left:auto; color:#9fb3d9; font-size:12px; }
main { padding: 18px 24px 40px; max-width: 1400px; }
h1 { font-size: 20px; margin: 4px 0 12px; }
h2 { font-size: 15px; margin: 22px 0 8px; color: var(--muted); text-transform: uppercase;
     letter-spacing: .6px; }
table { border-collapse: collapse; width: 100%; background:#fff; border:1px solid var(--line); }
th, td { text-align:left; padding:6px 10px; border-bottom:1px solid var(--line);
         vertical-align: top; }
th { background:#eef2f8; font-weight:600; font-size:12px; color:var(--muted); }
td.num, th.num { text-align:right; font-variant-numeric: tabular-nums; }
a { color: var(--accent); }
.badge { display:inline-block; padding:1px 8px; border-radius:10px; font-size:12px;
         font-weight:600; background:#e5e9f0; }
.s-RUNNING, .s-TASK_RUNNING, .s-running { background:#d8f3e0; color:#135c2c; }
.s-PENDING, .s-pending, .s-waiting-for-master, .s-backoff { background:#fff1cc; color:#7a5200; }
.s-FINISHED, .s-TASK_FINISHED, .s-completed { background:#dde8ff; color:#1f3f8f; }
.s-FAILED, .s-TASK_FAILED, .s-TASK_LOST { background:#ffdcdc; color:#8a1c1c; }
.s-KILLED, .s-TASK_KILLED { background:#e9e1f5; color:#4b2a7a; }
.bar { background:#e7ebf2; border-radius:4px; height:10px; width:140px; overflow:hidden;
       display:inline-block; vertical-align:middle; }
.bar > span { display:block; height:100%; background:#3b7be0; }
.why { color:#7a5200; }
.muted { color: var(--muted); }
.cards { display:flex; gap:12px; flex-wrap:wrap; }
.card { background:#fff; border:1px solid var(--line); border-radius:6px; padding:10px 14px;
        min-width: 150px; }
.card .k { font-size:11px; color:var(--muted); text-transform:uppercase; }
.card .v { font-size:18px; font-weight:600; }
form.filters { display:flex; gap:10px; align-items:end; margin: 0 0 12px; }
form.filters label { font-size:12px; color:var(--muted); display:flex; flex-direction:column; }
input, select, button { font: inherit; padding:4px 8px; }
.chart { background:#fff; border:1px solid var(--line); border-radius:6px; padding:8px; }
.error { background:#ffecec; border:1px solid #f0b8b8; padding:12px 16px; border-radius:6px; }
"""


def esc(x: Any) -> str:
    return html.escape("" if x is None else str(x), quote=True)


def ago(t: float | None, now: float) -> str:
    if not t:
        return "-"
    s = max(0.0, now - t)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if s >= size:
            return f"{int(s // size)}{unit} ago"
    return f"{int(s)}s ago"


def seconds(s: float | None) -> str:
    if s is None:
        return "-"
    if s < 60:
        return f"{s:.0f}s"
    if s < 3600:
        return f"{s / 60:.0f}m"
    return f"{s / 3600:.1f}h"


def money(x: float | None, currency: str = "") -> str:
    if x is None:
        return "-"
    text = f"{x:,.2f}" if abs(x) >= 1 or x == 0 else f"{x:.4f}"
    return f"{text} {esc(currency)}".strip()


def badge(state: str) -> str:
    return f'<span class="badge s-{esc(state)}">{esc(state)}</span>'


def table(head: Sequence[str], rows: Iterable[Sequence[str]], nums: frozenset[int] = frozenset(),
          empty: str = "nothing to show", cls: str = "") -> str:
    hs = "".join(f'<th{" class=num" if i in nums else ""}>{esc(h)}</th>'
                 for i, h in enumerate(head))
    body = "".join("<tr>" + "".join(f'<td{" class=num" if i in nums else ""}>{c}</td>'
                                    for i, c in enumerate(r)) + "</tr>" for r in rows)
    if not body:
        body = f'<tr><td colspan="{len(head)}" class="muted">{esc(empty)}</td></tr>'
    return f'<table class="{cls}"><thead><tr>{hs}</tr></thead><tbody>{body}</tbody></table>'


def page(title: str, body: str, who: Principal | None, tab: str, *, refresh: bool = False,
         auth: bool = False) -> web.Response:
    tabs = [("jobs", "/ui/", "Jobs"), ("roles", "/ui/roles", "Roles"),
            ("agents", "/ui/agents", "Agents"), ("history", "/ui/history", "History")]
    nav = "".join(f'<a href="{href}" class="{"on" if key == tab else ""}">{label}</a>'
                  for key, href, label in tabs)
    who_text = ""
    if who is not None and auth:
        who_text = (f'<span class="who">{esc(who.name)} · '
                    f'<a href="/ui/logout">log out</a></span>')
    meta = f'<meta http-equiv="refresh" content="{REFRESH_SECONDS}">' if refresh else ""
    doc = (f"<!doctype html><html lang=en><head><meta charset=utf-8>{meta}"
           f"<meta name=viewport content='width=device-width, initial-scale=1'>"
           f"<title>{esc(title)} · Corral</title><style>{CSS}</style></head><body>"
           f"<header><b>Corral</b>{nav}{who_text}</header><main>{body}</main></body></html>")
    return web.Response(text=doc, content_type="text/html",
                        headers={"Cache-Control": "no-store",
                                 "Content-Security-Policy": "default-src 'none'; "
                                 "style-src 'unsafe-inline'; img-src data:; "
                                 "form-action 'self'; frame-ancestors 'none'",
                                 "X-Content-Type-Options": "nosniff"})


def error_page(status: int, body: Mapping[str, Any], who: Principal | None,
               auth: bool) -> web.Response:
    text = esc(body.get("error", "error"))
    resp = page("Error", f'<h1>{status}</h1><div class="error">{text}</div>', who, "",
                auth=auth)
    resp.set_status(status)
    return resp


def job_link(key: str) -> str:
    return f'<a href="/ui/job/{quote(key)}">{esc(key)}</a>'


def progress_bar(done: int, total: int) -> str:
    if total <= 0:
        return '<span class="muted">-</span>'
    pct = min(100.0, 100.0 * done / total)
    return (f'<span class="bar"><span style="width:{pct:.0f}%"></span></span> '
            f'<span class="muted">{done}/{total}</span>')


def chart(samples: Sequence[Sequence[float]], width: int = 720, height: int = 200) -> str:
    """Progress (done/total, %) and running workers over time, as an inline SVG."""
    if len(samples) < 2:
        return '<p class="muted">not enough progress reports for a chart yet</p>'
    t0, t1 = samples[0][0], samples[-1][0]
    span = max(t1 - t0, 1e-6)
    pad_l, pad_r, pad_t, pad_b = 44, 44, 12, 26
    w, h = width - pad_l - pad_r, height - pad_t - pad_b
    wmax = max(1.0, max(s[3] for s in samples))

    def x(t: float) -> float:
        return pad_l + w * (t - t0) / span

    def y(frac: float) -> float:
        return pad_t + h * (1 - frac)

    pct = " ".join(f"{x(s[0]):.1f},{y(min(1.0, s[1] / s[2]) if s[2] else 0.0):.1f}"
                   for s in samples)
    wrk = " ".join(f"{x(s[0]):.1f},{y(s[3] / wmax):.1f}" for s in samples)
    grid = "".join(
        f'<line x1="{pad_l}" x2="{pad_l + w}" y1="{y(f):.1f}" y2="{y(f):.1f}" '
        f'stroke="#e3e8f0"/><text x="{pad_l - 6}" y="{y(f) + 4:.1f}" font-size="10" '
        f'text-anchor="end" fill="#5b6577">{int(f * 100)}%</text>'
        f'<text x="{pad_l + w + 6}" y="{y(f) + 4:.1f}" font-size="10" fill="#b06a00">'
        f'{wmax * f:.0f}</text>' for f in (0, 0.25, 0.5, 0.75, 1.0))
    return (f'<svg class="chart" role="img" aria-label="progress over time" '
            f'width="{width}" height="{height}" viewBox="0 0 {width} {height}">{grid}'
            f'<polyline fill="none" stroke="#3b7be0" stroke-width="2" points="{pct}"/>'
            f'<polyline fill="none" stroke="#e08a1e" stroke-width="1.5" '
            f'stroke-dasharray="4 3" points="{wrk}"/>'
            f'<text x="{pad_l}" y="{height - 6}" font-size="10" fill="#5b6577">'
            f'{seconds(0)}</text><text x="{pad_l + w}" y="{height - 6}" font-size="10" '
            f'text-anchor="end" fill="#5b6577">{seconds(span)}</text>'
            f'<text x="{pad_l + w / 2}" y="{height - 6}" font-size="10" text-anchor="middle" '
            f'fill="#5b6577">— done (%)   - - running workers</text></svg>')


def cost_cards(c: Mapping[str, Any] | None) -> str:
    if not c:
        return '<p class="muted">no price table (start the scheduler with --prices)</p>'
    cur = c.get("currency", "")
    cards = [("total", c["total"]), ("useful", c["useful"]), ("lost", c["lost"]),
             ("checkpoints", c["checkpoint"]), ("idle spares", c["spare"]),
             ("on-demand would be", c["on_demand"]), ("savings", c["savings"])]
    return '<div class="cards">' + "".join(
        f'<div class="card"><div class="k">{esc(k)}</div><div class="v">{money(v, cur)}</div>'
        f"</div>" for k, v in cards) + "</div>"


def _filters(action: str, role: str | None, state: str | None, extra: str = "") -> str:
    opts = "".join(f'<option value="{s}"{" selected" if s == state else ""}>{s}</option>'
                   for s in ("", *STATES))
    return (f'<form class="filters" method="get" action="{action}">'
            f'<label>role<input name="role" value="{esc(role or "")}" size="16"></label>'
            f'<label>state<select name="state">{opts}</select></label>{extra}'
            f'<button type="submit">filter</button></form>')


def add_pages(server: HttpServer, data: Data, guarded: Callable[..., Any],
              auth: AuthConfig | None, cookie: str) -> None:
    on = auth is not None

    async def jobs(request: web.Request, who: Principal) -> web.Response:
        role, state = query_role(request), query_state(request)
        rows = await data.jobs(allowed_roles(who), role, state)
        now = time.time()
        body = "<h1>Jobs</h1>" + _filters("/ui/", role, state) + table(
            ["job", "state", "workers", "progress", "cost", "submitted", "message"],
            ([job_link(j["key"]), badge(j["state"]),
              f'{j["running_workers"]}/{j["desired_workers"]}',
              progress_bar(j["progress"]["done"], j["progress"]["total"]),
              money(j.get("cost"), j.get("currency", "")) if "cost" in j else "-",
              esc(ago(j["submitted_at"], now)), esc(j["message"][:120])] for j in rows),
            nums=frozenset({2}), empty="no jobs", cls="jobs")
        return page("Jobs", body, who, "jobs", refresh=True, auth=on)

    async def job(request: web.Request, who: Principal) -> web.Response:
        key = request.match_info["key"]
        d = await data.job(allowed_roles(who), key)
        now = time.time()
        spec = d.get("spec", {})
        tier = spec.get("tier", "")
        tasks = d.get("tasks", [])
        rows = []
        for t in tasks:
            why = t.get("pending_reason") or " ".join(
                x for x in (t.get("reason"), t.get("message")) if x) or ""
            rows.append([
                esc(t["slot"]), badge(t["state"]), esc(t.get("life") or ""),
                esc(t.get("hostname") or t.get("agent_id") or "-"),
                esc(t.get("market") or "-"), esc(tier), esc(t.get("attempt", 0)),
                f'<span class="why">{esc(why)}</span>' if t["state"] == "PENDING"
                else esc(why),
                esc(seconds(t.get("checkpoint_age")))])
        res = d.get("resilience", {})
        losses = [[esc(x["kind"]), esc(x["slot"]), esc(x["task_id"]),
                   esc(f'{x["work_lost_seconds"]:.1f}s'),
                   esc("recovering" if x.get("recovery_seconds") is None
                       else f'back in {x["recovery_seconds"]:.1f}s'),
                   esc(ago(x["detected_at"], now))] for x in res.get("recent", [])]
        p = d.get("progress", {})
        source = ("" if d.get("source") == "scheduler"
                  else '<p class="muted">from the job history (the scheduler no longer '
                       'holds this job)</p>')
        body = (
            f'<h1>{esc(d["key"])} {badge(d["state"])}</h1>{source}'
            f'<p>{esc(d.get("message", ""))}</p>'
            '<div class="cards">'
            f'<div class="card"><div class="k">target workers</div>'
            f'<div class="v">{esc(d.get("desired_workers"))}</div>'
            f'<div class="muted">{esc(d.get("target_reason", ""))}</div></div>'
            f'<div class="card"><div class="k">progress</div><div class="v">'
            f'{esc(p.get("done", 0))}/{esc(p.get("total", 0))}</div>'
            f'<div class="muted">backlog {esc(p.get("backlog", 0))}</div></div>'
            f'<div class="card"><div class="k">tier · priority</div><div class="v">'
            f'{esc(tier)} · {esc(spec.get("priority", 0))}</div></div>'
            f'<div class="card"><div class="k">submitted</div><div class="v">'
            f'{esc(ago(d.get("submitted_at"), now))}</div></div>'
            f'<div class="card"><div class="k">losses · recoveries</div><div class="v">'
            f'{esc(res.get("losses", 0))} · {esc(res.get("recoveries", 0))}</div>'
            f'<div class="muted">work lost {esc(seconds(res.get("work_lost_seconds")))}'
            f'</div></div></div>'
            f'<h2>Progress over time</h2>{chart(d.get("progress_samples") or [])}'
            f'<h2>Tasks</h2>' + table(
                ["slot", "state", "life", "agent", "market", "tier", "attempt",
                 "why / last reason", "checkpoint age"], rows, nums=frozenset({6}),
                empty="no tasks", cls="tasks")
            + "<h2>Losses and recoveries</h2>" + table(
                ["kind", "slot", "task", "work lost", "recovery", "detected"], losses,
                empty="no losses")
            + f'<h2>Cost</h2>{cost_cards(d.get("cost"))}')
        return page(d["key"], body, who, "jobs", refresh=d.get("source") == "scheduler",
                    auth=on)

    async def roles(_: web.Request, who: Principal) -> web.Response:
        rows = await data.roles(allowed_roles(who))

        def res(r: Mapping[str, float] | None) -> str:
            if not r:
                return "-"
            return esc(", ".join(f"{k} {v:g}" for k, v in r.items() if v and v < 1e9))

        body = "<h1>Roles</h1>" + table(
            ["role", "weight", "guarantee", "limit", "budget", "fair share", "using",
             "workers", "jobs", "cost"],
            ([esc(r["role"]), esc(f'{r["weight"]:g}'), res(r["guarantee"]), res(r["limit"]),
              esc(f'{r["budget"]["amount"]:g} / {seconds(r["budget"]["window_s"])}')
              if r["budget"] else "-",
              esc(f'{r["fair_share"]:.0%}'), esc(f'{r["allocation_share"]:.0%}'),
              esc(f'{r["workers_running"]}/{r["workers_desired"]}'), esc(r["jobs_active"]),
              money(r["cost"]["total"], r["cost"]["currency"]) if r["cost"]
              and r["cost"]["currency"] else "-"] for r in rows),
            nums=frozenset({1, 5, 6, 7, 8}), empty="no roles", cls="roles")
        return page("Roles", body, who, "roles", refresh=True, auth=on)

    async def agents(_: web.Request, who: Principal) -> web.Response:
        markets = await data.agents()
        body = "<h1>Agents by market</h1>"
        if not markets:
            body += '<p class="muted">no agent has offered yet</p>'
        for market, rows in markets.items():
            body += f"<h2>{esc(market)} · {len(rows)} agents</h2>" + table(
                ["agent", "host", "tasks", "cpus held", "mem held", "state"],
                ([esc(a["agent_id"]), esc(a["hostname"]), esc(a["tasks"]),
                  esc(f'{a["held"]["cpus"] + a["revocable"]["cpus"]:g}'),
                  esc(f'{a["held"]["mem"] + a["revocable"]["mem"]:g}'),
                  "lost" if a["lost"] else ("draining" if a["draining_at"] else "up")]
                 for a in rows), nums=frozenset({2, 3, 4}))
        return page("Agents", body, who, "agents", refresh=True, auth=on)

    async def history(request: web.Request, who: Principal) -> web.Response:
        role, state = query_role(request), query_state(request)
        since_text = request.query.get("since") or ""
        since = parse_since(since_text, time.time())
        rows = await data.history(allowed_roles(who), role, since, state,
                                  query_limit(request))
        extra = (f'<label>since<input name="since" value="{esc(since_text)}" size="6" '
                 f'placeholder="2d"></label>')
        now = time.time()
        body = "<h1>Job history</h1>" + _filters("/ui/history", role, state, extra) + table(
            ["job", "state", "finished", "ran for", "tasks", "losses", "cost", "message"],
            ([job_link(r["job_key"]), badge(r["state"]), esc(ago(r["finished_at"], now)),
              esc(seconds((r["finished_at"] or r["submitted_at"]) - r["submitted_at"])),
              esc(r["tasks"]), esc(r["losses"]),
              money(r["cost_total"], r["currency"]) if r["currency"] else "-",
              esc(r["message"][:120])] for r in rows),
            nums=frozenset({4, 5}), empty="no finished jobs match", cls="history")
        return page("History", body, who, "history", auth=on)

    async def login_form(request: web.Request) -> web.Response:
        bad = request.query.get("bad")
        note = '<div class="error">that token is not known</div>' if bad else ""
        body = (f"<h1>Log in</h1>{note}<form method=post action=/ui/login>"
                '<label>bearer token <input type=password name=token size=50 '
                'autocomplete=off></label> <button type=submit>log in</button></form>'
                '<p class="muted">the token you use with the corral command '
                '(CORRAL_TOKEN or the config file)</p>')
        return page("Log in", body, None, "")

    async def login(request: web.Request) -> web.Response:
        form = await request.post()
        token = str(form.get("token", "")).strip()
        if auth is None or not token or auth.identify(token, None, None) is None:
            raise web.HTTPSeeOther("/ui/login?" + urlencode({"bad": "1"}))
        resp = web.HTTPSeeOther("/ui/")
        resp.set_cookie(cookie, token, httponly=True, samesite="Strict", path="/",
                        secure=request.secure, max_age=12 * 3600)
        raise resp

    async def logout(_: web.Request) -> web.Response:
        resp = web.HTTPSeeOther("/ui/login" if on else "/ui/")
        resp.del_cookie(cookie, path="/")
        raise resp

    server.add_get("/ui/", guarded(jobs, html=True))
    server.add_get("/ui/job/{key:.+}", guarded(job, html=True))
    server.add_get("/ui/roles", guarded(roles, html=True))
    server.add_get("/ui/agents", guarded(agents, html=True))
    server.add_get("/ui/history", guarded(history, html=True))
    server.add_get("/ui/login", login_form)
    server.add_post("/ui/login", login)
    server.add_get("/ui/logout", logout)
