//! `securenn bench --compare FILE`: our bench rows beside another engine's, matched on (model,
//! batch).
//!
//! The other file is a JSON array of rows in the bench schema ([`super::BenchRow`]'s field
//! names), from any engine: `scripts/spu_bench.py` writes SecretFlow SPU's that way, and a file
//! `securenn bench --json` wrote works too. Only a few fields are read: `model` and `batch` (to
//! match), `seconds` and `bytes` (required), and, where present and not null, `rounds`,
//! `wall_seconds`, `network`, `layout`, `protocol`, `engine`, `date` and the machine load
//! (`loadavg_before`). Unknown fields are ignored; a missing or mistyped one is an error naming
//! the file, the row and the field.
//!
//! Every one of our rows is paired with every row of the file that has its model and batch, so a
//! cell of ours in two layouts beside SPU's two protocols gives four lines. Seconds are compared
//! two ways: `seconds` only where both rows are on the same network (ours are virtual seconds on
//! a simulated network, SPU's wall seconds with no network: `local`), and always wall seconds
//! (both engines' three parties on the one machine).

use super::{BenchPlan, BenchRow, MODELS, layout_name};
use serde_json::Value;
use std::path::Path;

/// Problems with a file of rows, each naming the file (and the row and field where there is
/// one; rows count from 1).
#[derive(Debug, thiserror::Error)]
pub enum CompareError {
    #[error("cannot read {path}: {cause}")]
    Io { path: String, cause: std::io::Error },
    #[error("{path} is not JSON: {reason}")]
    Json { path: String, reason: String },
    #[error("{path}: expected a JSON array of bench rows, found {found}")]
    NotArray { path: String, found: &'static str },
    #[error("{path}: holds no rows")]
    Empty { path: String },
    #[error("{path}: row {row}: field {field:?} {problem}")]
    Field {
        path: String,
        row: usize,
        field: &'static str,
        problem: String,
    },
    #[error(
        "{path}: none of its rows is of a model the bench runs ({}): it has {theirs}",
        MODELS.join(", ")
    )]
    NoModel { path: String, theirs: String },
    #[error("{path}: no row matches ours on (model, batch): the file has {theirs}, we have {ours}")]
    NoMatch {
        path: String,
        theirs: String,
        ours: String,
    },
}

/// One row of either side, as far as the comparison reads it.
#[derive(Clone, Debug, PartialEq)]
pub struct CompareRow {
    pub model: String,
    pub batch: usize,
    /// Where it ran: a simulator preset (`lan`, `wan`, ...) or `local` (one machine, no
    /// network model).
    pub network: Option<String>,
    pub layout: Option<String>,
    pub protocol: Option<String>,
    /// The engine and its version (`spu 0.9.5`); ours have none (`securenn`).
    pub engine: Option<String>,
    pub seconds: f64,
    pub wall_seconds: Option<f64>,
    pub bytes: u64,
    /// Of `bytes`, what the model owner's weights cost to bring in once (ours: `weights_bytes`);
    /// `None` where the row does not say (SPU's exclude input sharing altogether).
    pub weights_bytes: Option<u64>,
    pub rounds: Option<u64>,
    pub date: Option<String>,
    /// The machine's `/proc/loadavg` (1, 5 and 15 minutes) when the row was measured.
    pub loadavg: Option<String>,
}

impl CompareRow {
    /// Our row as the comparison reads it.
    pub fn from_bench(r: &BenchRow) -> Self {
        Self {
            model: r.model.clone(),
            batch: r.batch,
            network: Some(r.network.clone()),
            layout: Some(match r.without {
                None => layout_name(r.layout).to_string(),
                Some(l) => format!("{} without {l}", layout_name(r.layout)),
            }),
            protocol: Some(r.protocol.name().to_string()),
            engine: None,
            seconds: r.seconds,
            wall_seconds: Some(r.wall_seconds),
            bytes: r.bytes,
            weights_bytes: Some(r.weights_bytes),
            rounds: Some(r.rounds),
            date: None,
            loadavg: None,
        }
    }

    /// Wall seconds: `wall_seconds`, or `seconds` where the row ran on no network model
    /// (`local`: its seconds are wall seconds).
    pub fn wall(&self) -> Option<f64> {
        self.wall_seconds
            .or((self.network.as_deref() == Some("local")).then_some(self.seconds))
    }

    /// What ran it, for the table: engine (first word) and protocol, or network and layout.
    fn label(&self) -> String {
        let engine = self
            .engine
            .as_deref()
            .and_then(|e| e.split_whitespace().next());
        let parts: Vec<&str> = match engine {
            Some(e) => [Some(e), self.protocol.as_deref()]
                .into_iter()
                .flatten()
                .collect(),
            None => [self.network.as_deref(), self.layout.as_deref()]
                .into_iter()
                .flatten()
                .collect(),
        };
        if parts.is_empty() {
            "-".into()
        } else {
            parts.join(" ")
        }
    }
}

/// Read a file of rows (see the module docs).
pub fn read_rows(path: &Path) -> Result<Vec<CompareRow>, CompareError> {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|cause| CompareError::Io {
        path: name.clone(),
        cause,
    })?;
    parse_rows(&text, &name)
}

/// Parse rows from `text`; `path` names the file in errors.
pub fn parse_rows(text: &str, path: &str) -> Result<Vec<CompareRow>, CompareError> {
    let v: Value = serde_json::from_str(text).map_err(|e| CompareError::Json {
        path: path.to_string(),
        reason: e.to_string(),
    })?;
    let rows = match v {
        Value::Array(rows) => rows,
        other => {
            return Err(CompareError::NotArray {
                path: path.to_string(),
                found: kind(&other),
            });
        }
    };
    if rows.is_empty() {
        return Err(CompareError::Empty {
            path: path.to_string(),
        });
    }
    rows.iter()
        .enumerate()
        .map(|(i, r)| parse_row(r, path, i + 1))
        .collect()
}

/// A JSON value's kind, for error messages about files of rows (never its content).
pub(crate) fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn parse_row(r: &Value, path: &str, row: usize) -> Result<CompareRow, CompareError> {
    let err = |field: &'static str, problem: String| CompareError::Field {
        path: path.to_string(),
        row,
        field,
        problem,
    };
    let obj = r.as_object().ok_or_else(|| CompareError::Field {
        path: path.to_string(),
        row,
        field: "(row)",
        problem: format!("is {}, expected an object", kind(r)),
    })?;
    // A field's value, `None` where it is absent or null.
    let get = |field: &'static str| obj.get(field).filter(|v| !v.is_null());
    let required = |field: &'static str| get(field).ok_or_else(|| err(field, "is missing".into()));
    let string = |field: &'static str, v: &Value| {
        v.as_str()
            .map(str::to_string)
            .ok_or_else(|| err(field, format!("is {}, expected a string", kind(v))))
    };
    let count = |field: &'static str, v: &Value| {
        v.as_u64().ok_or_else(|| {
            err(
                field,
                format!("is {v}, expected a whole number of at least 0"),
            )
        })
    };
    let seconds = |field: &'static str, v: &Value| {
        v.as_f64()
            .filter(|s| s.is_finite() && *s >= 0.0)
            .ok_or_else(|| err(field, format!("is {v}, expected seconds (a number ≥ 0)")))
    };
    let opt_string = |field: &'static str| get(field).map(|v| string(field, v)).transpose();
    let model = string("model", required("model")?)?;
    let batch = count("batch", required("batch")?)?;
    if batch == 0 {
        return Err(err("batch", "is 0, expected a batch of at least 1".into()));
    }
    Ok(CompareRow {
        model,
        batch: usize::try_from(batch)
            .map_err(|_| err("batch", format!("is {batch}: too large")))?,
        network: opt_string("network")?,
        layout: match (opt_string("layout")?, opt_string("without")?) {
            (Some(l), Some(w)) => Some(format!("{l} without {w}")),
            (l, _) => l,
        },
        protocol: opt_string("protocol")?,
        engine: opt_string("engine")?,
        seconds: seconds("seconds", required("seconds")?)?,
        wall_seconds: get("wall_seconds")
            .map(|v| seconds("wall_seconds", v))
            .transpose()?,
        bytes: count("bytes", required("bytes")?)?,
        weights_bytes: get("weights_bytes")
            .map(|v| count("weights_bytes", v))
            .transpose()?,
        rounds: get("rounds").map(|v| count("rounds", v)).transpose()?,
        date: opt_string("date")?,
        loadavg: opt_string("loadavg_before")?,
    })
}

/// The pairs to show: (our row, their row) indices, for each of our rows in order every row of
/// theirs with the same model and batch, in their order. `path` names their file in the error
/// when nothing matches.
pub fn pairs(
    ours: &[CompareRow],
    theirs: &[CompareRow],
    path: &str,
) -> Result<Vec<(usize, usize)>, CompareError> {
    let out: Vec<(usize, usize)> = ours
        .iter()
        .enumerate()
        .flat_map(|(i, o)| {
            theirs
                .iter()
                .enumerate()
                .filter(move |(_, t)| (&t.model, t.batch) == (&o.model, o.batch))
                .map(move |(j, _)| (i, j))
        })
        .collect();
    if out.is_empty() {
        return Err(CompareError::NoMatch {
            path: path.to_string(),
            theirs: cells(theirs),
            ours: cells(ours),
        });
    }
    Ok(out)
}

/// The (model, batch) cells of `rows`, each once, as `a batch 1, c batch 128`.
fn cells(rows: &[CompareRow]) -> String {
    let mut seen: Vec<(&str, usize)> = Vec::new();
    for r in rows {
        if !seen.contains(&(r.model.as_str(), r.batch)) {
            seen.push((r.model.as_str(), r.batch));
        }
    }
    seen.iter()
        .map(|(m, b)| format!("{m} batch {b}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Narrow `plan` to the file's models and batches, each list only where the command line gave
/// none (`models_given`, `batches_given`): what `bench --compare FILE` runs of ours. Models the
/// bench does not run are left out; none left is an error naming the file.
pub fn narrow_plan(
    plan: &mut BenchPlan,
    theirs: &[CompareRow],
    path: &str,
    models_given: bool,
    batches_given: bool,
) -> Result<(), CompareError> {
    if !models_given {
        let mut models: Vec<String> = Vec::new();
        for r in theirs {
            if MODELS.contains(&r.model.as_str()) && !models.contains(&r.model) {
                models.push(r.model.clone());
            }
        }
        if models.is_empty() {
            return Err(CompareError::NoModel {
                path: path.to_string(),
                theirs: cells(theirs),
            });
        }
        plan.models = models;
    }
    if !batches_given {
        let mut batches: Vec<usize> = Vec::new();
        for r in theirs {
            if !batches.contains(&r.batch) {
                batches.push(r.batch);
            }
        }
        plan.batches = batches;
    }
    Ok(())
}

fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    }
}

fn cell(v: Option<f64>, digits: usize) -> String {
    v.map_or("-".into(), |v| format!("{v:.digits$}"))
}

/// Ours beside theirs, one line per pair of [`pairs`], with ours / theirs for seconds (same
/// network only), wall seconds, MB (10^6 bytes) and rounds; below, where their rows come from
/// and which of them matched none of ours.
pub fn compare_table(
    ours: &[CompareRow],
    theirs: &[CompareRow],
    path: &str,
) -> Result<String, CompareError> {
    use std::fmt::Write as _;
    let pairs = pairs(ours, theirs, path)?;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:<17} {:>5} {:<14} {:<14} {:>8} {:>8} {:>7} {:>9} {:>9} {:>7} {:>9} {:>9} {:>7} {:>10} {:>7} {:>6} {:>6} {:>6}",
        "model",
        "batch",
        "ours",
        "theirs",
        "ours s",
        "their s",
        "ratio",
        "ours wall",
        "their wall",
        "ratio",
        "ours MB",
        "their MB",
        "ratio",
        "ours - wts",
        "ratio",
        "rounds",
        "theirs",
        "ratio"
    );
    for &(i, j) in &pairs {
        let (o, t) = (&ours[i], &theirs[j]);
        let same_network = o.network.is_some() && o.network == t.network;
        let rounds = |r: Option<u64>| r.map(|r| r as f64);
        // Ours without bringing the weights in, beside theirs where their bytes leave the
        // inputs out (SPU shares them outside its links).
        let online = o.weights_bytes.map(|w| o.bytes.saturating_sub(w) as f64);
        let _ = writeln!(
            s,
            "{:<17} {:>5} {:<14} {:<14} {:>8.3} {:>8.3} {:>7} {:>9} {:>9} {:>7} {:>9.3} {:>9.3} {:>7} {:>10} {:>7} {:>6} {:>6} {:>6}",
            o.model,
            o.batch,
            o.label(),
            t.label(),
            o.seconds,
            t.seconds,
            cell(
                same_network
                    .then(|| ratio(Some(o.seconds), Some(t.seconds)))
                    .flatten(),
                2
            ),
            cell(o.wall(), 3),
            cell(t.wall(), 3),
            cell(ratio(o.wall(), t.wall()), 2),
            o.bytes as f64 / 1e6,
            t.bytes as f64 / 1e6,
            cell(ratio(Some(o.bytes as f64), Some(t.bytes as f64)), 3),
            cell(online.map(|b| b / 1e6), 3),
            cell(ratio(online, Some(t.bytes as f64)), 3),
            o.rounds.map_or("-".into(), |r| r.to_string()),
            t.rounds.map_or("-".into(), |r| r.to_string()),
            cell(ratio(rounds(o.rounds), rounds(t.rounds)), 2),
        );
    }
    let _ = writeln!(
        s,
        "ratios are ours / theirs (below 1 we are ahead); seconds compared only on the same \
         network, wall seconds always (each engine's three parties on one machine); ours - wts: \
         our MB less the weights' one-time input (sharing them, or the kernels' masked copies \
         to the helper), which engines that share inputs outside their links do not count"
    );
    let mut engines: Vec<&str> = Vec::new();
    let mut dates: Vec<&str> = Vec::new();
    for t in theirs {
        let e = t.engine.as_deref().unwrap_or("engine not given");
        if !engines.contains(&e) {
            engines.push(e);
        }
        if let Some(d) = t.date.as_deref().filter(|d| !dates.contains(d)) {
            dates.push(d);
        }
    }
    // The 1-minute load averages the rows were measured under.
    let loads: Vec<f64> = theirs
        .iter()
        .filter_map(|t| {
            t.loadavg
                .as_deref()?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .collect();
    let _ = write!(s, "theirs: {path}: {}", engines.join(", "));
    if !dates.is_empty() {
        let _ = write!(s, ", measured {}", dates.join(", "));
    }
    if let (Some(lo), Some(hi)) = (
        loads.iter().copied().reduce(f64::min),
        loads.iter().copied().reduce(f64::max),
    ) {
        let _ = write!(s, ", 1-minute load {lo:.2} to {hi:.2}");
    }
    let _ = writeln!(s);
    let unmatched: Vec<CompareRow> = theirs
        .iter()
        .enumerate()
        .filter(|(j, _)| !pairs.iter().any(|&(_, pj)| pj == *j))
        .map(|(_, t)| t.clone())
        .collect();
    if !unmatched.is_empty() {
        let _ = writeln!(s, "not matched by any of ours: {}", cells(&unmatched));
    }
    Ok(s)
}
