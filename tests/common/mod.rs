//! Helpers shared by the integration tests: running one protocol function at all three parties,
//! and applying an operation on any backend.
#![allow(dead_code)]

use rand::SeedableRng;
use securenn::channel::{Ctx, P0, P1, PartyId, ProtocolError};
use securenn::fixed::FixedPoint;
use securenn::party::{LocalCluster, PartyConfig, RunReport, SeedSource, spmd};
use securenn::protocol::{Protocol, avgpool};
use securenn::ring::{Padding, RingTensor, Window};
use std::future::Future;

pub type Prg = securenn::share::Prg;

/// Run `f` at all three parties over the in-memory transport with a fixed seed.
pub fn run3<R, F, Fut>(seed: u64, f: F) -> Result<RunReport<R>, ProtocolError>
where
    R: Send + 'static,
    F: Fn(Ctx) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = Result<R, ProtocolError>> + 'static,
{
    LocalCluster::run_once(
        PartyConfig::default(),
        SeedSource::Fixed(seed),
        "test",
        spmd(f),
    )
}

/// Random fixed-point values uniform in [-range, range].
pub fn random_fixed(shape: &[usize], range: f64, rng: &mut Prg) -> RingTensor {
    use rand::RngExt;
    let fp = FixedPoint::default();
    let n: usize = shape.iter().product();
    let v: Vec<f64> = (0..n).map(|_| rng.random_range(-range..=range)).collect();
    fp.encode_tensor(shape, &v).unwrap()
}

pub fn rng(seed: u64) -> Prg {
    Prg::seed_from_u64(seed)
}

/// An operation under test, applied the same way on every backend.
#[derive(Clone, Debug)]
pub enum Op {
    Add,
    Sub,
    Mul,
    Matmul,
    Conv {
        stride: usize,
        padding: Padding,
    },
    Relu,
    /// Average pooling over the window (dividing by the whole window where it overlaps padding
    /// if the flag is set).
    AvgPool(Window, bool),
    MaxPool(Window),
    SumPool(Window),
    AddPublic(f64),
    MulPublic(f64),
    AddBias,
    Reshape(Vec<usize>),
}

pub async fn apply<P: Protocol>(
    p: &P,
    ctx: &Ctx,
    op: &Op,
    x: &P::Tensor,
    y: &P::Tensor,
) -> Result<P::Tensor, ProtocolError> {
    match op {
        Op::Add => p.add(ctx, x, y),
        Op::Sub => p.sub(ctx, x, y),
        Op::Mul => p.mul(ctx, x, y).await,
        Op::Matmul => p.matmul(ctx, x, y).await,
        Op::Conv { stride, padding } => p.conv2d(ctx, x, y, *stride, *padding).await,
        Op::Relu => p.relu(ctx, x).await,
        Op::AvgPool(w, count) => avgpool(p, ctx, x, w, *count),
        Op::MaxPool(w) => p.maxpool(ctx, x, w).await,
        Op::SumPool(w) => Ok(p.sum_pool(x, w)),
        Op::AddPublic(c) => p.add_public(ctx, x, *c),
        Op::MulPublic(c) => p.mul_public(ctx, x, *c),
        Op::AddBias => p.add_bias(ctx, x, y),
        Op::Reshape(s) => Ok(p.reshape(x, s)),
    }
}

/// Inputs for a binary op: x owned by `owners.0`, y by `owners.1`.
#[derive(Clone)]
pub struct Case {
    pub op: Op,
    pub x: RingTensor,
    pub y: RingTensor,
    pub frac: (u32, u32),
    pub owners: (PartyId, PartyId),
}

impl Case {
    pub fn new(op: Op, x: RingTensor, y: RingTensor) -> Self {
        Self {
            op,
            x,
            y,
            frac: (13, 13),
            owners: (P0, P1),
        }
    }
}

/// Run `case` on any backend at every party; returns each party's share (`None` on P2).
pub fn run_case<P, B>(
    seed: u64,
    case: &Case,
    backend: B,
) -> Result<RunReport<Option<RingTensor>>, ProtocolError>
where
    P: Protocol,
    B: Fn() -> P + Clone + Send + 'static,
    P::Tensor: HasShare,
{
    let case = case.clone();
    run3(seed, move |ctx: Ctx| {
        let (case, backend) = (case.clone(), backend.clone());
        async move {
            let p = backend();
            let me = ctx.me();
            let (ox, oy) = case.owners;
            let x = p
                .input(
                    &ctx,
                    ox,
                    (me == ox).then_some(&case.x),
                    case.x.shape(),
                    case.frac.0,
                )
                .await?;
            let y = p
                .input(
                    &ctx,
                    oy,
                    (me == oy).then_some(&case.y),
                    case.y.shape(),
                    case.frac.1,
                )
                .await?;
            let z = apply(&p, &ctx.child("op"), &case.op, &x, &y).await?;
            Ok(z.share())
        }
    })
}

/// A party's share of a backend tensor.
pub trait HasShare {
    fn share(&self) -> Option<RingTensor>;
}

impl HasShare for securenn::protocol::SharedTensor {
    fn share(&self) -> Option<RingTensor> {
        securenn::protocol::SharedTensor::share(self).cloned()
    }
}

/// The value of an op in the plaintext reference.
pub fn plain_case(
    case: &Case,
    relu: securenn::protocol::ReluKind,
) -> Result<RingTensor, ProtocolError> {
    let p = securenn::protocol::Plaintext { relu };
    let ctx = Ctx::local(FixedPoint::default());
    futures::executor::block_on(async {
        let x = p
            .input(&ctx, P0, Some(&case.x), case.x.shape(), case.frac.0)
            .await?;
        let y = p
            .input(&ctx, P1, Some(&case.y), case.y.shape(), case.frac.1)
            .await?;
        Ok(apply(&p, &ctx.child("op"), &case.op, &x, &y).await?.value)
    })
}

/// P0's and P1's shares added up.
pub fn reconstruct(outputs: &[Option<RingTensor>]) -> RingTensor {
    outputs[0]
        .as_ref()
        .unwrap()
        .add(outputs[1].as_ref().unwrap())
}

/// Largest |a - b| in ulps (signed ring elements).
pub fn max_ulp_diff(a: &RingTensor, b: &RingTensor) -> u64 {
    assert_eq!(a.shape(), b.shape());
    a.as_slice()
        .iter()
        .zip(b.as_slice())
        .map(|(&x, &y)| (x as i64).wrapping_sub(y as i64).unsigned_abs())
        .max()
        .unwrap_or(0)
}

/// Run the `securenn` binary: (success, stdout, stderr).
pub fn securenn_cli(args: &[&str]) -> (bool, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_securenn"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A transport that keeps a copy of every envelope sent (payload included), for inspecting a
/// party's view in tests.
struct Recorder {
    inner: std::sync::Arc<dyn securenn_transports::Transport>,
    log: std::sync::Arc<std::sync::Mutex<Vec<securenn_transports::Envelope>>>,
}

impl securenn_transports::Transport for Recorder {
    fn party(&self) -> PartyId {
        self.inner.party()
    }
    fn parties(&self) -> usize {
        self.inner.parties()
    }
    fn send(
        &self,
        env: securenn_transports::Envelope,
    ) -> Result<(), securenn_transports::TransportError> {
        self.log.lock().unwrap().push(env.clone());
        self.inner.send(env)
    }
}

/// Run the jobs `names` in one session (setup once, then each job in turn, every party running
/// `f`) over the in-memory transport with a fixed seed, keeping a copy of every envelope the
/// jobs send: what each party saw, payloads included. Returns each job's outputs.
pub fn run3_recorded_jobs<R, F, Fut>(
    seed: u64,
    names: &[&str],
    f: F,
) -> Result<(Vec<Vec<R>>, Vec<securenn_transports::Envelope>), ProtocolError>
where
    R: Send + 'static,
    F: Fn(Ctx) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = Result<R, ProtocolError>> + 'static,
{
    use securenn_transports::{Endpoint, MemoryNetwork, Meter};
    let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let meter = Meter::new(3);
    let endpoints: Vec<Endpoint> = MemoryNetwork::endpoints(3, &meter)
        .into_iter()
        .map(|ep| Endpoint {
            transport: std::sync::Arc::new(Recorder {
                inner: ep.transport,
                log: log.clone(),
            }),
            ..ep
        })
        .collect();
    let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    let seen = log.clone();
    let outputs = actix::System::new().block_on(async move {
        let cluster = LocalCluster::with_endpoints(endpoints, meter, PartyConfig::default());
        let result = async {
            cluster.setup(1, SeedSource::Fixed(seed)).await?;
            seen.lock().unwrap().clear();
            let jobs = spmd(f);
            let mut outputs = Vec::new();
            for name in &names {
                let outs = cluster
                    .run(name, (0..3).map(|i| jobs(PartyId(i))).collect())
                    .await?;
                outputs.push(outs.into_iter().map(|o| o.value).collect());
            }
            Ok::<_, ProtocolError>(outputs)
        }
        .await;
        cluster.stop();
        result
    })?;
    let log = std::mem::take(&mut *log.lock().unwrap());
    Ok((outputs, log))
}

/// [`run3_recorded_jobs`] with one job called `test` (as [`run3`] names it).
pub fn run3_recorded<R, F, Fut>(
    seed: u64,
    f: F,
) -> Result<(Vec<R>, Vec<securenn_transports::Envelope>), ProtocolError>
where
    R: Send + 'static,
    F: Fn(Ctx) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = Result<R, ProtocolError>> + 'static,
{
    let (mut outputs, log) = run3_recorded_jobs(seed, &["test"], f)?;
    Ok((outputs.remove(0), log))
}
