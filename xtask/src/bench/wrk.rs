//! The load generator check: `wasmkv bench` against wrk on the same node and endpoint, so the
//! other tables measure the servers, not our client (issue 4 asks for at least wrk's rate).

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use super::Plan;
use super::cmd::Cmd;
use super::report::{Better, Table, Unit};
use super::scenarios::{CONNECTIONS, checked, fill, result, say, timed};
use super::wasmkv::{Node, THREADS, Wasmkv};

/// The client must not be what is measured: `wasmkv bench` against wrk on the same node and
/// the same endpoint.
pub fn client_check(plan: &Plan, wasmkv: &Wasmkv) -> Result<Table> {
    const LABEL: &str = "client check";
    const RATE: &str = "GET /v1/kv/{key} requests/s";
    const P99: &str = "p99 latency";
    let mut t = Table::versus(
        "Load generator check: `wasmkv bench` vs `wrk`",
        "wasmkv bench",
        "wrk",
        &[
            "One wasmkv node (config/primary.yaml, one serving thread as everywhere here), 100k keys loaded; both clients \
             send `GET /v1/kv/key:%012d` for random keys over HTTP/1.1 keep-alive, 50 \
             connections on one thread each (wrk: `-t 1` and a Lua script picking the key).",
            "Issue 4 asks `wasmkv bench` to reach at least wrk's rate, so the client is never \
             what the other tables measure.",
        ],
    );
    t.row(RATE, Unit::PerSec, Better::Higher, true);
    t.row(P99, Unit::Micros, Better::Lower, false);
    for round in 1..=plan.rounds {
        let tmp = plan.tempdir()?;
        say(LABEL, round, plan, "start wasmkv, load 100k keys");
        let node = wasmkv.start(&tmp.path().join("wasmkv"), &[], &mut t.commands)?;
        fill(wasmkv, &node, plan.keys, &mut t)?;
        say(LABEL, round, plan, "wasmkv bench --workload rest-get");
        let load = timed(plan, "rest-get", CONNECTIONS, 1);
        let r = checked(wasmkv.bench(&node, &load, &mut t.commands)?)?;
        t.ours(RATE, r.rps);
        t.ours(P99, r.p99_us);
        say(LABEL, round, plan, "wrk");
        let (rps, p99) = wrk(&node, plan, tmp.path(), &mut t)?;
        t.theirs(RATE, rps);
        t.theirs(P99, p99);
        node.stop()?;
    }
    Ok(t)
}

/// Run wrk for the warm-up, then for the measured duration; returns (requests/s, p99 µs).
fn wrk(node: &Node, plan: &Plan, dir: &Path, t: &mut Table) -> Result<(f64, f64)> {
    let script = dir.join("get.lua");
    std::fs::write(
        &script,
        format!(
            "-- GET a random preloaded key, as `wasmkv bench --workload rest-get` does\n\
             request = function()\n  \
             return wrk.format(\"GET\", string.format(\"/v1/kv/key:%012d\", \
             math.random(0, {} - 1)))\nend\n",
            plan.keys
        ),
    )?;
    let run = |length: Duration, t: &mut Table| -> Result<String> {
        let mut cmd = Cmd::new("wrk", "wrk");
        cmd.arg("-t")
            .arg(THREADS)
            .arg("-c")
            .arg(CONNECTIONS.to_string())
            .arg("-d")
            // wrk takes whole seconds only.
            .arg(format!("{}s", length.as_secs_f64().ceil().max(1.0)))
            .arg("--latency")
            .arg("-s")
            .arg_as(&script, "get.lua")
            .arg_as(&node.addr, "$URL");
        t.commands.add(&cmd);
        cmd.output()
    };
    run(plan.warmup, t)?;
    let out = run(plan.duration, t)?;
    let parsed = parse_wrk(&out)?;
    result(format!(
        "wrk {:.0} requests/s, p99 {}",
        parsed.0,
        super::micros(parsed.1)
    ));
    Ok(parsed)
}

/// Requests/sec and the 99% latency from `wrk --latency`; a non-2xx answer (a miss) fails.
fn parse_wrk(out: &str) -> Result<(f64, f64)> {
    if let Some(line) = out.lines().find(|l| l.contains("Non-2xx or 3xx responses")) {
        bail!("wrk got errors ({}): were the keys loaded?", line.trim());
    }
    let rps = out
        .lines()
        .find_map(|l| l.trim().strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
        .with_context(|| format!("no Requests/sec in wrk output: {out}"))?;
    let p99 = out
        .lines()
        .find_map(|l| l.trim().strip_prefix("99%"))
        .and_then(|v| wrk_micros(v.trim()))
        .with_context(|| format!("no 99% latency in wrk output: {out}"))?;
    Ok((rps, p99))
}

/// wrk's `512.00us`, `2.01ms`, `1.50s` in microseconds.
fn wrk_micros(text: &str) -> Option<f64> {
    let split = text.find(|c: char| c.is_ascii_alphabetic())?;
    let (num, unit) = text.split_at(split);
    let v: f64 = num.parse().ok()?;
    Some(match unit {
        "us" => v,
        "ms" => v * 1e3,
        "s" => v * 1e6,
        "m" => v * 60e6,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_wrk_output() {
        let out = "Running 5s test @ http://127.0.0.1:8080\n  2 threads and 50 connections\n\
                   Thread Stats   Avg      Stdev     Max   +/- Stdev\n\
                   Latency   512.00us  100.00us   5.00ms   90.00%\n\
                   Latency Distribution\n     50%  449.00us\n     75%  600.00us\n\
                   90%  800.00us\n     99%    2.01ms\n\
                   500000 requests in 5.00s, 50.00MB read\nRequests/sec: 100000.50\n\
                   Transfer/sec:     10.00MB\n";
        let (rps, p99) = parse_wrk(out).unwrap();
        assert_eq!(rps, 100000.5);
        assert!((p99 - 2010.0).abs() < 1e-6);
        let failed = format!("{out}  Non-2xx or 3xx responses: 12\n");
        assert!(parse_wrk(&failed).is_err());
        assert!(parse_wrk("nothing").is_err());
    }

    #[test]
    fn wrk_units() {
        assert_eq!(wrk_micros("512.00us"), Some(512.0));
        assert_eq!(wrk_micros("1.50s"), Some(1_500_000.0));
        assert_eq!(wrk_micros("1.5x"), None);
    }
}
