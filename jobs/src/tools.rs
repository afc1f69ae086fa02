//! The in-task tools (SPEC §4) — `mpipe`, `mcat`, `mtee`, `msplit` — as run inside a task: the
//! `mobula` binary under those names (`main` dispatches on `argv[0]`). Each talks to the node's
//! agent over the unix socket bound into the sandbox (`$MOBULA_TOOLS_SOCKET`), one connection
//! per output: a JSON [`ToolRequest`] line, then (for pipe/save) the bytes until EOF, then one
//! JSON [`ToolReply`] line once the agent has stored them. The agent decides what the task may
//! touch (its job's account only); the tools are plain blocking std code, no runtime.

use std::collections::BTreeMap;
use std::io::{self, BufRead, BufReader, BufWriter, Read, Write};
use std::os::unix::net::UnixStream;

use serde::{Deserialize, Serialize};

/// Names the binary answers to inside a task.
pub const TOOLS: [&str; 4] = ["mpipe", "mcat", "mtee", "msplit"];
/// Where the agent's socket is inside a task (a bind of the task's own socket file), where the
/// `mobula` binary is (the tools are symlinks to it), and the directory of those links (first
/// on a task's `PATH`): the places the sandbox reserves for them.
pub use mobula_sandbox::mounts::{TOOLS_BIN, TOOLS_EXE, TOOLS_SOCKET as SOCKET};

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ToolRequest {
    /// `pipe` (a task output), `save` (an object, not an output: mtee), `cat` (outputs by
    /// reference).
    pub op: String,
    #[serde(default)]
    pub path: Option<String>,
    #[serde(default)]
    pub paths: Vec<String>,
    #[serde(default)]
    pub reducer: Option<u32>,
    /// Create missing parent directories.
    #[serde(default)]
    pub parents: bool,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ToolReply {
    pub ok: bool,
    #[serde(default)]
    pub message: String,
}

fn socket() -> io::Result<UnixStream> {
    let path = std::env::var("MOBULA_TOOLS_SOCKET").unwrap_or_else(|_| SOCKET.to_string());
    UnixStream::connect(&path)
        .map_err(|e| io::Error::new(e.kind(), format!("agent socket {path}: {e}")))
}

fn expand(p: &str) -> String {
    match p.strip_prefix("~~") {
        Some(rest) => format!("/{}{rest}", std::env::var("MANTA_USER").unwrap_or_default()),
        None => p.to_string(),
    }
}

/// A connection that has sent its request; write the body, then [`Conn::finish`].
struct Conn {
    w: BufWriter<UnixStream>,
}

impl Conn {
    fn open(req: &ToolRequest) -> io::Result<Conn> {
        let s = socket()?;
        let mut w = BufWriter::with_capacity(256 << 10, s);
        serde_json::to_writer(&mut w, req)?;
        w.write_all(b"\n")?;
        Ok(Conn { w })
    }

    fn finish(self) -> io::Result<()> {
        let s = self.w.into_inner().map_err(|e| e.into_error())?;
        s.shutdown(std::net::Shutdown::Write)?;
        let mut line = String::new();
        BufReader::new(&s).read_line(&mut line)?;
        let r: ToolReply = serde_json::from_str(&line)
            .map_err(|_| io::Error::other("the agent did not answer"))?;
        if r.ok {
            Ok(())
        } else {
            Err(io::Error::other(r.message))
        }
    }
}

impl Write for Conn {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        self.w.write(b)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.w.flush()
    }
}

/// Run tool `name` with `args`; returns the exit code.
pub fn main(name: &str, args: &[String]) -> i32 {
    let r = match name {
        "mpipe" => mpipe(args),
        "mcat" => mcat(args),
        "mtee" => mtee(args),
        "msplit" => msplit(args),
        _ => Err(io::Error::other("unknown tool")),
    };
    match r {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("{name}: {e}");
            1
        }
    }
}

fn usage(u: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, format!("usage: {u}"))
}

/// Options as (flag, value) pairs, and operands.
type Parsed = (Vec<(char, String)>, Vec<String>);

/// Options as (flag, value) pairs and the remaining operands; `with_value` lists flags that
/// take one.
fn parse(args: &[String], with_value: &str, u: &str) -> io::Result<Parsed> {
    let (mut opts, mut rest) = (Vec::new(), Vec::new());
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a
            .strip_prefix('-')
            .and_then(|f| f.chars().next().map(|c| (c, f)))
        {
            Some((c, f)) if f.len() == 1 && with_value.contains(c) => {
                opts.push((c, it.next().ok_or_else(|| usage(u))?.clone()))
            }
            Some((c, f)) if f.len() == 1 => opts.push((c, String::new())),
            _ => rest.push(a.clone()),
        }
    }
    Ok((opts, rest))
}

fn mpipe(args: &[String]) -> io::Result<()> {
    const U: &str = "mpipe [-p] [-r REDUCER] [-H header:value]... [PATH]";
    let (opts, rest) = parse(args, "rH", U)?;
    let mut req = ToolRequest {
        op: "pipe".into(),
        path: rest.first().map(|p| expand(p)),
        ..Default::default()
    };
    if rest.len() > 1 {
        return Err(usage(U));
    }
    for (c, v) in opts {
        match c {
            'p' => req.parents = true,
            'r' => req.reducer = Some(v.parse().map_err(|_| usage(U))?),
            'H' => {
                let (h, v) = v.split_once(':').ok_or_else(|| usage(U))?;
                req.headers
                    .insert(h.trim().to_ascii_lowercase(), v.trim().into());
            }
            _ => return Err(usage(U)),
        }
    }
    let mut c = Conn::open(&req)?;
    io::copy(&mut io::stdin().lock(), &mut c)?;
    c.finish()
}

fn mcat(args: &[String]) -> io::Result<()> {
    if args.is_empty() {
        return Err(usage("mcat PATH..."));
    }
    let req = ToolRequest {
        op: "cat".into(),
        paths: args.iter().map(|p| expand(p)).collect(),
        ..Default::default()
    };
    Conn::open(&req)?.finish()
}

fn mtee(args: &[String]) -> io::Result<()> {
    const U: &str = "mtee [-p] PATH";
    let (opts, rest) = parse(args, "", U)?;
    let [path] = rest.as_slice() else {
        return Err(usage(U));
    };
    let req = ToolRequest {
        op: "save".into(),
        path: Some(expand(path)),
        parents: opts.iter().any(|(c, _)| *c == 'p'),
        ..Default::default()
    };
    let mut c = Conn::open(&req)?;
    let (mut stdin, mut stdout) = (io::stdin().lock(), io::stdout().lock());
    let mut buf = vec![0u8; 256 << 10];
    loop {
        let n = stdin.read(&mut buf)?;
        if n == 0 {
            break;
        }
        stdout.write_all(&buf[..n])?;
        c.write_all(&buf[..n])?;
    }
    stdout.flush()?;
    c.finish()
}

/// Reducer for a line's key (FNV-1a, like the scheduler's routing).
pub fn partition(key: &[u8], n: u32) -> u32 {
    (crate::schedule::fnv1a(key) % n as u64) as u32
}

fn msplit(args: &[String]) -> io::Result<()> {
    const U: &str = "msplit -n N [-d DELIM] [-f FIELD,...]";
    let (opts, rest) = parse(args, "ndf", U)?;
    if !rest.is_empty() {
        return Err(usage(U));
    }
    let (mut n, mut delim, mut fields) = (0u32, b'\t', Vec::<usize>::new());
    for (c, v) in opts {
        match c {
            'n' => n = v.parse().map_err(|_| usage(U))?,
            'd' => delim = *v.as_bytes().first().ok_or_else(|| usage(U))?,
            'f' => {
                for f in v.split(',') {
                    let f: usize = f.trim().parse().map_err(|_| usage(U))?;
                    fields.push(f.checked_sub(1).ok_or_else(|| usage(U))?);
                }
            }
            _ => return Err(usage(U)),
        }
    }
    if n == 0 || n > crate::spec::MAX_REDUCERS {
        return Err(usage(U));
    }
    let mut conns = (0..n)
        .map(|r| {
            Conn::open(&ToolRequest {
                op: "pipe".into(),
                reducer: Some(r),
                ..Default::default()
            })
        })
        .collect::<io::Result<Vec<_>>>()?;
    let mut line = Vec::new();
    let mut stdin = io::stdin().lock();
    loop {
        line.clear();
        if stdin.read_until(b'\n', &mut line)? == 0 {
            break;
        }
        let body = line.strip_suffix(b"\n").unwrap_or(&line);
        let key: Vec<u8> = if fields.is_empty() {
            body.to_vec()
        } else {
            let cols: Vec<&[u8]> = body.split(|b| *b == delim).collect();
            let picked: Vec<&[u8]> = fields
                .iter()
                .map(|f| cols.get(*f).copied().unwrap_or(b""))
                .collect();
            picked.join(&delim)
        };
        conns[partition(&key, n) as usize].write_all(&line)?;
    }
    for c in conns {
        c.finish()?;
    }
    Ok(())
}
