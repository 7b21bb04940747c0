//! An HTTP/1.1 proxy in front of the test S3 server that counts requests
//! and injects faults at chosen ones: a 500 response, a dropped
//! connection, or a stall past the client's timeout. The real S3 client
//! (object_store, with its retries) talks to it as to any server.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// `500 Internal Server Error`, as a busy server answers.
    Status500,
    /// The connection closed without an answer.
    Drop,
    /// No answer for `STALL`, then closed.
    Stall,
}

/// Longer than the client timeout the tests set (SNAP_S3_TIMEOUT).
pub const STALL: Duration = Duration::from_millis(1500);

/// Which requests fail: `at` (1-based, counted from the last reset), and
/// every later one too when `from_then_on`.
#[derive(Clone, Copy, Debug)]
pub struct Plan {
    pub fault: Fault,
    pub at: usize,
    pub from_then_on: bool,
}

pub struct FaultProxy {
    pub endpoint: String,
    requests: Arc<AtomicUsize>,
    plan: Arc<Mutex<Option<Plan>>>,
    stop: Arc<AtomicBool>,
}

impl FaultProxy {
    /// A proxy to `upstream` (`host:port`), healthy until `set` is called.
    pub fn start(upstream: &str) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let (requests, plan, stop) = (
            Arc::new(AtomicUsize::new(0)),
            Arc::new(Mutex::new(None)),
            Arc::new(AtomicBool::new(false)),
        );
        let (r, p, s, up) = (
            requests.clone(),
            plan.clone(),
            stop.clone(),
            upstream.to_string(),
        );
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if s.load(Ordering::Relaxed) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let (r, p, up) = (r.clone(), p.clone(), up.clone());
                std::thread::spawn(move || {
                    let _ = serve(conn, &up, &r, &p);
                });
            }
        });
        FaultProxy {
            endpoint,
            requests,
            plan,
            stop,
        }
    }

    /// Count from zero again, with this plan (None: healthy).
    pub fn set(&self, plan: Option<Plan>) {
        *self.plan.lock().unwrap() = plan;
        self.requests.store(0, Ordering::SeqCst);
    }

    /// Requests since the last `set`.
    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect(self.endpoint.trim_start_matches("http://"));
    }
}

/// One client connection: requests in turn, each forwarded or failed.
fn serve(
    client: TcpStream,
    upstream: &str,
    count: &AtomicUsize,
    plan: &Mutex<Option<Plan>>,
) -> std::io::Result<()> {
    let mut from_client = BufReader::new(client.try_clone()?);
    let mut to_client = client;
    let server = TcpStream::connect(upstream)?;
    let mut from_server = BufReader::new(server.try_clone()?);
    let mut to_server = server;
    loop {
        let Some((head, body)) = read_message(&mut from_client, false)? else {
            return Ok(());
        };
        let n = count.fetch_add(1, Ordering::SeqCst) + 1;
        let fault = plan
            .lock()
            .unwrap()
            .filter(|p| n == p.at || (p.from_then_on && n > p.at))
            .map(|p| p.fault);
        match fault {
            Some(Fault::Status500) => {
                to_client.write_all(
                    b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                )?;
                return Ok(());
            }
            Some(Fault::Drop) => {
                let _ = to_client.shutdown(Shutdown::Both);
                return Ok(());
            }
            Some(Fault::Stall) => {
                std::thread::sleep(STALL);
                let _ = to_client.shutdown(Shutdown::Both);
                return Ok(());
            }
            None => {}
        }
        let is_head = head.starts_with(b"HEAD ");
        to_server.write_all(&head)?;
        to_server.write_all(&body)?;
        let Some((rhead, rbody)) = read_message(&mut from_server, is_head)? else {
            return Ok(());
        };
        to_client.write_all(&rhead)?;
        to_client.write_all(&rbody)?;
    }
}

/// One HTTP/1.1 message: its head (through the blank line) and its body
/// (by Content-Length, or chunked, kept encoded). None at end of stream.
fn read_message(
    r: &mut BufReader<TcpStream>,
    head_only: bool,
) -> std::io::Result<Option<(Vec<u8>, Vec<u8>)>> {
    let mut head = Vec::new();
    loop {
        let mut line = Vec::new();
        if r.read_until(b'\n', &mut line)? == 0 {
            return Ok(None);
        }
        head.extend_from_slice(&line);
        if line == b"\r\n" {
            break;
        }
    }
    let text = String::from_utf8_lossy(&head).to_ascii_lowercase();
    let header = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_string()))
    };
    let status_no_body = text.starts_with("http/1.1 204") || text.starts_with("http/1.1 304");
    let mut body = Vec::new();
    if head_only || status_no_body {
        return Ok(Some((head, body)));
    }
    if let Some(len) = header("content-length:").and_then(|v| v.parse::<usize>().ok()) {
        body.resize(len, 0);
        r.read_exact(&mut body)?;
    } else if header("transfer-encoding:").is_some_and(|v| v.contains("chunked")) {
        loop {
            let mut size_line = Vec::new();
            r.read_until(b'\n', &mut size_line)?;
            body.extend_from_slice(&size_line);
            let size_text = String::from_utf8_lossy(&size_line);
            let size = usize::from_str_radix(size_text.trim().split(';').next().unwrap_or(""), 16)
                .map_err(|_| std::io::Error::other("bad chunk size"))?;
            let mut chunk = vec![0; size + 2];
            r.read_exact(&mut chunk)?;
            body.extend_from_slice(&chunk);
            if size == 0 {
                break;
            }
        }
    }
    Ok(Some((head, body)))
}
