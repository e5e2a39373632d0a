//! Running one operator connection's complete requests: admin commands (RESP, through
//! `admin::execute`) and metrics requests (HTTP, routed by [`respond`]), each charged to the
//! turn's work budget. A `CLIENT KILL` stops the batch so the loop reaps before the next
//! request runs.

use std::borrow::Cow;
use std::time::SystemTime;

use log::{debug, info, Level};
use mio::Token;

use super::{OpsConn, Phase, Protocol};
use crate::ops::admin::{self, AdminStep, OpsCounters, View};
use crate::ops::http::{self, Method, Status};
use crate::ops::session_watch::SessionWatch;
use crate::ops::{metrics, status, status_page};
use crate::ops::{Context, Ops, Role, WORK};
use crate::protocol::args::Args;
use crate::protocol::resp::{self, Parsed};
use crate::telemetry::log_throttle::{budgeted, LineKind};
use crate::telemetry::logging::clipped;

impl Ops {
    /// Executes the complete requests in a connection's input; `Some` stops at a `CLIENT
    /// KILL`, whose sessions the loop reaps before the next request runs.
    pub(super) fn execute(&mut self, key: usize, cx: &mut Context<'_>) -> Option<Vec<Token>> {
        let conn = self.conns.get_mut(key)?;
        if conn.input.is_empty() {
            conn.held = false;
            return None;
        }
        match conn.role() {
            Role::Admin => self.admin_execute(key, cx),
            Role::Metrics => {
                self.metrics_execute(key, cx);
                None
            }
        }
    }

    fn admin_execute(&mut self, key: usize, cx: &mut Context<'_>) -> Option<Vec<Token>> {
        let now = cx.now;
        let listeners = (cx.listeners)();
        let admin_clients = self.counters.open[Role::Admin.index()] as usize;
        let max_request = cx.config.session.max_request_bytes;
        let mut pos = 0;
        let mut incomplete = false;
        let mut kill = None;
        let Ops {
            conns,
            admin,
            metrics,
            started,
            budget,
            counters,
            args,
            ..
        } = self;
        let conn = conns.get_mut(key)?;
        loop {
            if !conn.accepts_input() {
                break;
            }
            let budget = budget.left(now);
            if *budget == 0 {
                // The turn's operator work is spent: the rest waits for the next turn.
                break;
            }
            let before = conn.output.append().len();
            let OpsConn {
                input,
                output,
                protocol,
                phase,
                id,
                peer,
                ..
            } = conn;
            let output = output.append();
            let Protocol::Admin(client) = protocol else {
                return None;
            };
            let subscribed = client.subscriptions.wants_presence();
            let rest = &input[pos..];
            let step = match resp::parse(rest, max_request, args) {
                Ok(Parsed::Incomplete) => {
                    incomplete = true;
                    break;
                }
                Ok(Parsed::Request { consumed }) => {
                    pos += consumed;
                    let view = View {
                        now,
                        sessions: cx.sessions,
                        stats: &*cx.stats,
                        config: cx.config,
                        config_path: cx.config_path,
                        started: *started,
                        listeners: &listeners,
                        admin_listener: admin.as_ref().map(|b| b.local.as_str()),
                        metrics_listener: metrics.as_ref().map(|b| b.local.as_str()),
                        admin_clients,
                        ops: counters,
                        fleet: cx.fleet,
                    };
                    let request = Args::new(rest, args);
                    let step = admin::execute(request, client, &view, output);
                    let units = admin::request_cost(request) + cost(output.len() - before);
                    *budget = budget.saturating_sub(units);
                    step
                }
                Err(e) => {
                    resp::write_error(output, &format!("ERR {e}"));
                    debug!("admin id={id} peer={peer}: {e}");
                    pos = input.len();
                    *phase = Phase::Closing;
                    break;
                }
            };
            // Counted at once, so an event published by the next request already sees it.
            let stats = &mut *cx.stats;
            match (subscribed, client.subscriptions.wants_presence()) {
                (false, true) => {
                    stats.presence.subscribers += 1;
                    debug!("admin id={id} peer={peer}: subscribed to presence");
                }
                (true, false) => {
                    stats.presence.subscribers = stats.presence.subscribers.saturating_sub(1);
                    debug!("admin id={id} peer={peer}: unsubscribed from presence");
                }
                _ => {}
            }
            match step {
                AdminStep::Continue => {}
                AdminStep::List(listing) => {
                    *budget = budget.saturating_sub(listing.snapshot_cost());
                    conn.listing = Some(listing);
                    break;
                }
                AdminStep::Close => {
                    *phase = Phase::Closing;
                    break;
                }
                AdminStep::Kill(tokens) => {
                    info!(
                        "admin id={id} peer={peer}: CLIENT KILL reaps {} session(s)",
                        tokens.len()
                    );
                    // The loop reaps them; the next request runs after (`Ops::resume`).
                    kill = Some(tokens);
                    break;
                }
            }
        }
        conn.input.drain(..pos.min(conn.input.len()));
        conn.note_held(incomplete);
        kill
    }

    fn metrics_execute(&mut self, key: usize, cx: &mut Context<'_>) {
        let now = cx.now;
        let Ops {
            conns,
            started,
            started_at,
            budget,
            counters,
            watch,
            ..
        } = self;
        let Some(conn) = conns.get_mut(key) else {
            return;
        };
        let budget = budget.left(now);
        let mut pos = 0;
        let mut incomplete = false;
        let mut sweeping = false;
        while conn.accepts_input() && *budget > 0 {
            let rest = &conn.input[pos..];
            match http::parse(rest) {
                Ok(None) => {
                    incomplete = true;
                    break;
                }
                Ok(Some(req)) => {
                    pos += req.consumed;
                    let path = rest.get(req.path.clone()).unwrap_or_default();
                    let before = conn.output.append().len();
                    let mut page = Page {
                        now,
                        sessions: cx.sessions,
                        stats: &*cx.stats,
                        config: cx.config,
                        ops: counters,
                        started: *started,
                        started_at: *started_at,
                        watch,
                        budget,
                        sweeping: &mut sweeping,
                        fleet: cx.fleet.status(),
                        nodes: cx.fleet.is_on().then(|| &cx.fleet.view().nodes[..]),
                    };
                    let status = respond(&req, path, &mut page, conn.output.append());
                    *budget = budget.saturating_sub(1 + cost(conn.output.append().len() - before));
                    // The path is the scraper's: clipped, and within the log budget.
                    budgeted!(
                        cx.log_budget,
                        LineKind::Connect,
                        Level::Debug,
                        now,
                        "metrics id={} peer={}: {} {} -> {}",
                        conn.id,
                        conn.peer,
                        match req.method {
                            Method::Get => "GET",
                            Method::Head => "HEAD",
                            Method::Other => "(other)",
                        },
                        clipped(path),
                        status.0
                    );
                    if !req.keep_alive {
                        conn.phase = Phase::Closing;
                    }
                }
                Err(e) => {
                    let status = e.status();
                    debug!(
                        "metrics id={} peer={}: bad request -> {}",
                        conn.id, conn.peer, status.0
                    );
                    let body = format!("{} {}\n", status.0, status.1);
                    http::write_response(
                        conn.output.append(),
                        status,
                        &[("Content-Type", "text/plain; charset=utf-8")],
                        body.as_bytes(),
                        false,
                        false,
                    );
                    pos = conn.input.len();
                    conn.phase = Phase::Closing;
                }
            }
        }
        conn.input.drain(..pos.min(conn.input.len()));
        conn.note_held(incomplete);
        if sweeping && !self.work_pending {
            // The sweep goes on in the next turns (`Ops::ready` for `WORK`).
            self.work_pending = true;
            cx.revisit.push(WORK);
        }
    }
}

/// What a metrics request may read, and the status page's sweep and budget.
struct Page<'a, 'b> {
    now: std::time::Instant,
    sessions: &'a crate::session::SessionTable,
    stats: &'a crate::telemetry::stats::Stats,
    config: &'a crate::config::Config,
    ops: &'a OpsCounters,
    started: std::time::Instant,
    started_at: SystemTime,
    watch: &'b mut SessionWatch,
    budget: &'b mut usize,
    /// Set when a sweep is left in progress.
    sweeping: &'b mut bool,
    /// `[fleet]`'s counters, for `/metrics`.
    fleet: crate::fleet::Status,
    /// The fleet's nodes as last read from Redis, for `/status.json` (`None`: `[fleet]` off).
    nodes: Option<&'a [crate::fleet::NodeInfo]>,
}

/// Budget units for a reply of `bytes`: about one per `CLIENT LIST` line's worth.
fn cost(bytes: usize) -> usize {
    bytes / 512
}

/// A response header: name and value.
type Header<'a> = (&'a str, &'a str);

/// Routes one HTTP request: `GET`/`HEAD` of `/metrics`, of the status page (`/`,
/// `/status.js`, `/status.css`) and its data (`/status.json`); 404 for other paths, 405 for
/// other methods.
fn respond(req: &http::Request, path: &[u8], page: &mut Page<'_, '_>, out: &mut Vec<u8>) -> Status {
    let head_only = req.method == Method::Head;
    let text = [("Content-Type", "text/plain; charset=utf-8")];
    let json_headers;
    let asset_headers;
    let (status, headers, body): (Status, &[Header], Cow<'static, [u8]>) = match req.method {
        Method::Other => (
            Status::METHOD_NOT_ALLOWED,
            &[
                ("Allow", "GET, HEAD"),
                ("Content-Type", "text/plain; charset=utf-8"),
            ],
            b"405 Method Not Allowed: use GET\n".as_slice().into(),
        ),
        Method::Get | Method::Head if path == b"/metrics" => {
            let mut body = String::with_capacity(32 * 1024);
            metrics::render(page.stats, page.ops, page.started_at, &mut body);
            metrics::render_fleet(&page.fleet, &mut body);
            (
                Status::OK,
                &[("Content-Type", metrics::CONTENT_TYPE)],
                body.into_bytes().into(),
            )
        }
        Method::Get | Method::Head if path == b"/status.json" => {
            *page.sweeping = page.watch.request(page.sessions, page.now, page.budget);
            let mut body = Vec::with_capacity(16 * 1024);
            status::render(
                &status::Inputs {
                    now: page.now,
                    stats: page.stats,
                    config: page.config,
                    ops: page.ops,
                    started: page.started,
                    started_at: page.started_at,
                    fleet: page
                        .nodes
                        .map(|nodes| status::Fleet::of(nodes, page.config.fleet.lease)),
                    swept: page.watch.last(),
                },
                &mut body,
            );
            json_headers = status_page::headers("application/json");
            (Status::OK, &json_headers, body.into())
        }
        Method::Get | Method::Head => match status_page::asset(path) {
            Some(asset) => {
                asset_headers = status_page::headers(asset.content_type);
                (Status::OK, &asset_headers, asset.body.into())
            }
            None => (
                Status::NOT_FOUND,
                &text,
                b"404 Not Found: the metrics are at /metrics, the status page at /\n"
                    .as_slice()
                    .into(),
            ),
        },
    };
    http::write_response(out, status, headers, &body, head_only, req.keep_alive);
    status
}
