//! kvsctl: the command line of kvs. One command per run, or a shell reading commands from
//! stdin (rustyline on a terminal, plain lines from a pipe). Talks to the server only through
//! `kvs::client`; what it adds is argument parsing, output formats, exit statuses, following
//! a follower's NOT_LEADER to the leader, and reconnecting after a lost connection.

use std::ffi::OsString;
use std::fmt;
use std::io::{self, BufRead, IsTerminal, Read, Write};
use std::os::unix::ffi::OsStringExt;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use kvs::auth::Secret;
use kvs::client::{stats_lines, Client, ClientError, ClientOptions};
use kvs::limits;

const EXIT_OK: u8 = 0;
const EXIT_NOT_FOUND: u8 = 1;
const EXIT_ERROR: u8 = 2;

/// The longest value `set KEY -` reads from stdin: the most any kvsd can accept.
const STDIN_VALUE_BYTES_MAX: u64 = limits::VALUE_BYTES_MAX_CEILING as u64;
/// The longest shell line read from a pipe: a largest value, quoted, with room to spare.
const SHELL_LINE_BYTES_MAX: u64 = 2 * limits::FRAME_BYTES_MAX_CEILING as u64;
const HISTORY_FILE_NAME: &str = ".kvsctl_history";

const AFTER_HELP: &str = "\
Shell:
  Without a command, kvsctl reads commands from stdin: an interactive shell with history
  (~/.kvsctl_history) on a terminal, or one command per line, without a prompt, from a pipe:
      printf 'set a 1\\nget a\\n' | kvsctl
  Commands: get KEY, set KEY VALUE, del KEY, keys [PREFIX], stats, ping [TEXT], help, exit
  (or quit). Words are split as a POSIX shell splits them, so quote values with spaces:
      set greeting \"hello world\"
  Output is as for the one-shot commands, except that get of a missing key prints (nil).
  An error is printed and the shell goes on; a lost connection is made again by the next
  command. In the shell, \"-\" is a plain value, not stdin.

Authentication:
  A server started with --auth-file wants its secret before anything else: give kvsctl the
  same file with --auth-file, or the secret itself in KVS_AUTH (--auth-file wins). It is sent
  on every connection kvsctl makes, reconnections and redirections included.

Followers:
  A write sent to a follower is answered NOT_LEADER with the leader's address; kvsctl sends it
  again to the leader, once, and says so on stderr.

Exit status:
  0  success
  1  the key does not exist (get, del)
  2  any error: bad usage, no connection, the server answered ERROR (its message is printed
     on stderr after \"kvsctl: \"). A shell reading from a pipe exits 2 if any command failed.";

/// Talk to a kvsd server: run one command, or a shell when no command is given.
#[derive(Parser, Debug)]
#[command(name = "kvsctl", version, after_help = AFTER_HELP)]
struct Cli {
    /// The server's client address, HOST:PORT (a bare HOST gets port 7379)
    #[arg(
        long,
        short = 'a',
        env = "KVS_ADDR",
        value_name = "HOST:PORT",
        default_value_t = format!("127.0.0.1:{}", limits::PORT_DEFAULT)
    )]
    addr: String,

    /// A file holding the server's secret (its --auth-file); without it, the secret is taken
    /// from the KVS_AUTH environment variable, if set
    #[arg(long, value_name = "PATH")]
    auth_file: Option<PathBuf>,

    /// Seconds to wait for the server to answer before giving up; 0 waits for ever
    #[arg(long, value_name = "SECONDS", default_value_t = 30)]
    timeout: u64,

    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Print the value of a key
    ///
    /// Prints the value and a newline; a binary value is written byte for byte. Exit status 1,
    /// and "(not found)" on stderr, if the key does not exist.
    #[command(verbatim_doc_comment)]
    Get {
        /// The key (any bytes, 1 to 4096 by default)
        #[arg(allow_hyphen_values = true)]
        key: OsString,
        /// Answer only once the server has applied every write up to SEQ (read-your-writes
        /// on a follower)
        #[arg(long, value_name = "SEQ")]
        min_seq: Option<u64>,
    },
    /// Store a value under a key
    ///
    /// Prints "OK (seq N)", N being the write's sequence number. A VALUE of "-" reads the
    /// value from stdin, byte for byte, so binary values can be stored:
    ///     kvsctl set photo - < photo.jpg
    /// (to store a lone "-", pipe it in: printf - | kvsctl set KEY -).
    #[command(verbatim_doc_comment)]
    Set {
        /// The key (any bytes, 1 to 4096 by default)
        #[arg(allow_hyphen_values = true)]
        key: OsString,
        /// The value (0 to 1 MiB by default), or "-" to read it from stdin
        #[arg(allow_hyphen_values = true)]
        value: OsString,
    },
    /// Delete a key
    ///
    /// Prints "OK (seq N)". Exit status 1, and "(not found)" on stderr, if the key does not
    /// exist.
    #[command(verbatim_doc_comment)]
    Del {
        /// The key
        #[arg(allow_hyphen_values = true)]
        key: OsString,
    },
    /// List keys, one per line
    ///
    /// Prints every key that starts with PREFIX (every key without one), one per line, in
    /// ascending byte order, however many replies the server splits them into.
    #[command(verbatim_doc_comment)]
    Keys {
        /// Only keys that start with these bytes
        #[arg(allow_hyphen_values = true)]
        prefix: Option<OsString>,
    },
    /// Print the server's figures
    ///
    /// One "name  value" per line: role, keys, last_seq, durable_seq, connections, fsync
    /// timings and more (see docs/protocol.md).
    #[command(verbatim_doc_comment)]
    Stats,
    /// Compact the server's log now
    ///
    /// Rewrites every sealed log segment that holds overwritten or deleted data, and prints
    /// what it reclaimed. kvsd also compacts by itself (--compact-garbage-ratio).
    #[command(verbatim_doc_comment)]
    Compact,
    /// A Raft cluster: members, roles, term, commit seq, lag; or a change to it
    Cluster(kvs::client::cluster::ClusterArgs),
    /// Check that the server answers
    ///
    /// Prints TEXT as the server echoes it back, or PONG without TEXT.
    #[command(verbatim_doc_comment)]
    Ping {
        /// Bytes for the server to echo
        #[arg(allow_hyphen_values = true)]
        text: Option<OsString>,
    },
}

/// One request to make, from the command line or a shell line.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Action {
    Get { key: Vec<u8>, min_seq: Option<u64> },
    Set { key: Vec<u8>, value: Vec<u8> },
    Del { key: Vec<u8> },
    Keys { prefix: Vec<u8> },
    Stats,
    Compact,
    Ping { payload: Vec<u8> },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    OneShot,
    Shell,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Done,
    NotFound,
}

#[derive(Debug)]
enum Failure {
    Client(ClientError),
    /// A mistake in what the user typed or piped in.
    Input(String),
    /// Writing our own stdout failed (a closed pipe, a full disk).
    Output(io::Error),
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Client(error) => write!(f, "{error}"),
            Failure::Input(message) => write!(f, "{message}"),
            Failure::Output(error) => write!(f, "cannot write the output: {error}"),
        }
    }
}

impl From<ClientError> for Failure {
    fn from(error: ClientError) -> Self {
        Failure::Client(error)
    }
}

impl From<io::Error> for Failure {
    fn from(error: io::Error) -> Self {
        Failure::Output(error)
    }
}

/// The connection kvsctl works on, made when first needed and again after it is lost.
struct Session {
    addr: String,
    options: ClientOptions,
    secret: Option<Secret>,
    client: Option<Client>,
}

impl Session {
    fn new(addr: String, options: ClientOptions, secret: Option<Secret>) -> Session {
        Session {
            addr,
            options,
            secret,
            client: None,
        }
    }

    fn is_connected(&self) -> bool {
        self.client.is_some()
    }

    fn connect(&mut self) -> Result<&mut Client, ClientError> {
        let client = match self.client.take() {
            Some(client) => client,
            None => Client::connect_auth(&self.addr, self.options, self.secret.as_ref())?,
        };
        Ok(self.client.insert(client))
    }

    /// Runs `operation`, on the leader if this node turns out to be a follower.
    fn run<T>(
        &mut self,
        operation: impl FnMut(&mut Client) -> Result<T, ClientError>,
    ) -> Result<T, ClientError> {
        let client = self.connect()?;
        let result = client.follow_leader(operation, |leader| {
            note(&format!("redirected to leader at {leader}"))
        });
        if self.client.as_ref().is_some_and(Client::is_broken) {
            self.client = None;
        }
        result
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let timeout = (cli.timeout > 0).then(|| Duration::from_secs(cli.timeout));
    let options = ClientOptions {
        read_timeout: timeout,
        write_timeout: timeout,
        ..ClientOptions::default()
    };
    let secret = match Secret::for_client(cli.auth_file.as_deref()) {
        Ok(file) => file.map(|file| {
            if let Some(warning) = file.warning {
                note(&warning);
            }
            file.secret
        }),
        Err(error) => {
            note(&error.to_string());
            return ExitCode::from(EXIT_ERROR);
        }
    };
    if let Some(Command::Cluster(args)) = &cli.command {
        let addr = with_default_port(&cli.addr);
        return ExitCode::from(kvs::client::cluster::run(
            &addr,
            options,
            secret.as_ref(),
            args,
        ));
    }
    let mut session = Session::new(with_default_port(&cli.addr), options, secret);
    let status = match cli.command {
        Some(command) => one_shot(&mut session, command),
        None if io::stdin().is_terminal() => interactive(&mut session),
        None => piped(&mut session),
    };
    ExitCode::from(status)
}

fn one_shot(session: &mut Session, command: Command) -> u8 {
    let stdout = io::stdout();
    let mut out = stdout.lock();
    let result = action_of(command).and_then(|action| {
        let outcome = execute(session, &action, Mode::OneShot, &mut out)?;
        out.flush()?;
        Ok(outcome)
    });
    match result {
        Ok(Outcome::Done) => EXIT_OK,
        Ok(Outcome::NotFound) => EXIT_NOT_FOUND,
        // A reader that stopped reading (`kvsctl keys | head`) has what it wanted.
        Err(Failure::Output(error)) if error.kind() == io::ErrorKind::BrokenPipe => EXIT_OK,
        Err(failure) => {
            note(&failure.to_string());
            EXIT_ERROR
        }
    }
}

fn action_of(command: Command) -> Result<Action, Failure> {
    Ok(match command {
        Command::Get { key, min_seq } => Action::Get {
            key: key.into_vec(),
            min_seq,
        },
        Command::Set { key, value } => {
            let value = if value == "-" {
                read_stdin_value()?
            } else {
                value.into_vec()
            };
            Action::Set {
                key: key.into_vec(),
                value,
            }
        }
        Command::Del { key } => Action::Del {
            key: key.into_vec(),
        },
        Command::Keys { prefix } => Action::Keys {
            prefix: prefix.map(OsString::into_vec).unwrap_or_default(),
        },
        Command::Stats => Action::Stats,
        Command::Compact => Action::Compact,
        Command::Cluster(_) => unreachable!("main runs kvsctl cluster"),
        Command::Ping { text } => Action::Ping {
            payload: text.map(OsString::into_vec).unwrap_or_default(),
        },
    })
}

fn read_stdin_value() -> Result<Vec<u8>, Failure> {
    let mut value = Vec::new();
    io::stdin()
        .lock()
        .take(STDIN_VALUE_BYTES_MAX + 1)
        .read_to_end(&mut value)
        .map_err(|error| Failure::Input(format!("cannot read the value from stdin: {error}")))?;
    if value.len() as u64 > STDIN_VALUE_BYTES_MAX {
        return Err(Failure::Input(format!(
            "the value on stdin is over {STDIN_VALUE_BYTES_MAX} bytes, more than any kvsd accepts"
        )));
    }
    Ok(value)
}

/// Makes the request and prints its result: the value, keys or figures on `out`, notes on
/// stderr.
fn execute(
    session: &mut Session,
    action: &Action,
    mode: Mode,
    out: &mut dyn Write,
) -> Result<Outcome, Failure> {
    match action {
        Action::Get { key, min_seq } => {
            let value = session.run(|client| match min_seq {
                Some(min_seq) => client.get_min_seq(key, *min_seq),
                None => client.get(key),
            })?;
            match (value, mode) {
                (Some(value), _) => {
                    out.write_all(&value)?;
                    out.write_all(b"\n")?;
                    Ok(Outcome::Done)
                }
                (None, Mode::OneShot) => {
                    not_found();
                    Ok(Outcome::NotFound)
                }
                (None, Mode::Shell) => {
                    writeln!(out, "(nil)")?;
                    Ok(Outcome::NotFound)
                }
            }
        }
        Action::Set { key, value } => {
            let seq = session.run(|client| client.set(key, value))?;
            writeln!(out, "OK (seq {seq})")?;
            Ok(Outcome::Done)
        }
        Action::Del { key } => match session.run(|client| client.del(key))? {
            Some(seq) => {
                writeln!(out, "OK (seq {seq})")?;
                Ok(Outcome::Done)
            }
            None => {
                out.flush()?;
                not_found();
                Ok(Outcome::NotFound)
            }
        },
        Action::Keys { prefix } => {
            for key in session.run(|client| client.keys(prefix))? {
                out.write_all(&key)?;
                out.write_all(b"\n")?;
            }
            Ok(Outcome::Done)
        }
        Action::Stats => {
            let stats = session.run(|client| client.stats())?;
            out.write_all(format_stats(&stats).as_bytes())?;
            Ok(Outcome::Done)
        }
        Action::Compact => {
            let summary = session.run(|client| client.compact())?;
            out.write_all(format_stats(&summary).as_bytes())?;
            Ok(Outcome::Done)
        }
        Action::Ping { payload } => {
            let echo = session.run(|client| client.ping(payload))?;
            if echo.is_empty() {
                writeln!(out, "PONG")?;
            } else {
                out.write_all(&echo)?;
                out.write_all(b"\n")?;
            }
            Ok(Outcome::Done)
        }
    }
}

/// STATS' `name:value` lines as `name  value`, the values lined up.
fn format_stats(stats: &str) -> String {
    let width = stats_lines(stats)
        .iter()
        .map(|(name, _)| name.chars().count())
        .max()
        .unwrap_or(0);
    let mut formatted = String::with_capacity(stats.len() * 2);
    for line in stats.lines() {
        match line.split_once(':') {
            Some((name, value)) => {
                formatted.push_str(&format!("{name:<width$}  {value}\n"));
            }
            None if line.trim().is_empty() => {}
            None => {
                formatted.push_str(line);
                formatted.push('\n');
            }
        }
    }
    formatted
}

/// `host` alone means `host:7379`.
fn with_default_port(addr: &str) -> String {
    if addr.contains(':') {
        addr.to_string()
    } else {
        format!("{addr}:{}", limits::PORT_DEFAULT)
    }
}

/// A message on stderr, after `kvsctl: `. Never panics, even if stderr is gone.
fn note(message: &str) {
    let _ = writeln!(io::stderr().lock(), "kvsctl: {message}");
}

fn not_found() {
    let _ = writeln!(io::stderr().lock(), "(not found)");
}

// ---------------------------------------------------------------------------------------
// The shell.

#[derive(Debug, PartialEq, Eq)]
enum ShellLine {
    Empty,
    Help,
    Exit,
    Run(Action),
}

const SHELL_HELP: &str = "\
get KEY          print the value of KEY, or (nil)
set KEY VALUE    store VALUE under KEY (quote values with spaces: set k \"a b\")
del KEY          delete KEY
keys [PREFIX]    list the keys that start with PREFIX, or all keys
stats            the server's figures
compact          compact the server's log now
ping [TEXT]      check that the server answers
help             this list
exit, quit       leave (or Ctrl-D)
";

fn parse_shell_line(line: &[u8]) -> Result<ShellLine, String> {
    let words = shlex::bytes::split(line)
        .ok_or("unbalanced quotes or a trailing backslash: close the quote".to_string())?;
    let Some((command, args)) = words.split_first() else {
        return Ok(ShellLine::Empty);
    };
    let command = String::from_utf8_lossy(command).to_lowercase();
    let arity = |usage: &str, count: std::ops::RangeInclusive<usize>| {
        if count.contains(&args.len()) {
            Ok(())
        } else {
            Err(format!("usage: {usage}"))
        }
    };
    let arg = |at: usize| args.get(at).cloned().unwrap_or_default();
    let action = match command.as_str() {
        "get" => {
            arity("get KEY", 1..=1)?;
            Action::Get {
                key: arg(0),
                min_seq: None,
            }
        }
        "set" => {
            arity("set KEY VALUE", 2..=2)?;
            Action::Set {
                key: arg(0),
                value: arg(1),
            }
        }
        "del" => {
            arity("del KEY", 1..=1)?;
            Action::Del { key: arg(0) }
        }
        "keys" => {
            arity("keys [PREFIX]", 0..=1)?;
            Action::Keys { prefix: arg(0) }
        }
        "stats" => {
            arity("stats", 0..=0)?;
            Action::Stats
        }
        "compact" => {
            arity("compact", 0..=0)?;
            Action::Compact
        }
        "ping" => {
            arity("ping [TEXT]", 0..=1)?;
            Action::Ping { payload: arg(0) }
        }
        "help" | "?" => return Ok(ShellLine::Help),
        "exit" | "quit" => return Ok(ShellLine::Exit),
        _ => {
            return Err(format!(
                "unknown command '{}': type help for the list",
                command.escape_debug()
            ))
        }
    };
    Ok(ShellLine::Run(action))
}

enum Flow {
    Continue,
    Exit,
}

/// Runs one shell line; `Err` when the command failed (already reported on stderr).
fn run_shell_line(
    session: &mut Session,
    line: &[u8],
    out: &mut dyn Write,
) -> Result<Flow, Failure> {
    let result = match parse_shell_line(line) {
        Ok(ShellLine::Empty) => Ok(Flow::Continue),
        Ok(ShellLine::Help) => out
            .write_all(SHELL_HELP.as_bytes())
            .map(|_| Flow::Continue)
            .map_err(Failure::Output),
        Ok(ShellLine::Exit) => Ok(Flow::Exit),
        Ok(ShellLine::Run(action)) => {
            execute(session, &action, Mode::Shell, out).map(|_| Flow::Continue)
        }
        Err(message) => Err(Failure::Input(message)),
    };
    // Everything this line printed appears before the next prompt or error.
    let flushed = out.flush();
    match (result, flushed) {
        (Err(failure), _) => Err(failure),
        (Ok(_), Err(error)) => Err(Failure::Output(error)),
        (Ok(flow), Ok(())) => Ok(flow),
    }
}

/// The shell on a pipe: plain lines, no prompt. Exits 2 if any command failed.
fn piped(session: &mut Session) -> u8 {
    let stdin = io::stdin();
    let mut input = stdin.lock();
    let stdout = io::stdout();
    let mut out = stdout.lock();
    let mut failed = false;
    let mut line = Vec::new();
    loop {
        line.clear();
        match (&mut input)
            .take(SHELL_LINE_BYTES_MAX)
            .read_until(b'\n', &mut line)
        {
            Ok(0) => break,
            Ok(_) => {}
            Err(error) => {
                note(&format!("cannot read stdin: {error}"));
                return EXIT_ERROR;
            }
        }
        if line.last() != Some(&b'\n') && line.len() as u64 == SHELL_LINE_BYTES_MAX {
            note(&format!(
                "a line is over {SHELL_LINE_BYTES_MAX} bytes: skipped"
            ));
            failed = true;
            if let Err(error) = skip_line(&mut input) {
                note(&format!("cannot read stdin: {error}"));
                return EXIT_ERROR;
            }
            continue;
        }
        let text = line
            .strip_suffix(b"\n")
            .map(|rest| rest.strip_suffix(b"\r").unwrap_or(rest))
            .unwrap_or(&line);
        match run_shell_line(session, text, &mut out) {
            Ok(Flow::Continue) => {}
            Ok(Flow::Exit) => break,
            Err(Failure::Output(error)) if error.kind() == io::ErrorKind::BrokenPipe => break,
            Err(failure @ Failure::Output(_)) => {
                note(&failure.to_string());
                return EXIT_ERROR;
            }
            Err(failure) => {
                note(&failure.to_string());
                failed = true;
            }
        }
    }
    if failed {
        EXIT_ERROR
    } else {
        EXIT_OK
    }
}

/// Reads and drops the rest of an overlong line.
fn skip_line(input: &mut impl BufRead) -> io::Result<()> {
    loop {
        let buf = input.fill_buf()?;
        if buf.is_empty() {
            return Ok(());
        }
        match buf.iter().position(|byte| *byte == b'\n') {
            Some(at) => {
                input.consume(at + 1);
                return Ok(());
            }
            None => {
                let all = buf.len();
                input.consume(all);
            }
        }
    }
}

/// The shell on a terminal: rustyline, a prompt naming the server, history in the home dir.
fn interactive(session: &mut Session) -> u8 {
    use rustyline::error::ReadlineError;

    let mut editor = match rustyline::DefaultEditor::new() {
        Ok(editor) => editor,
        Err(error) => {
            note(&format!("no line editing ({error}); reading plain lines"));
            return piped(session);
        }
    };
    let history = std::env::var_os("HOME").map(|home| PathBuf::from(home).join(HISTORY_FILE_NAME));
    if let Some(path) = &history {
        // A missing history file is the normal first run.
        let _ = editor.load_history(path);
    }
    match session.connect() {
        Ok(_) => note(&format!(
            "connected to {}; type help for the commands",
            session.addr
        )),
        Err(error) => note(&error.to_string()),
    }
    let stdout = io::stdout();
    loop {
        let prompt = if session.is_connected() {
            format!("{}> ", session.addr)
        } else {
            "kvs> ".to_string()
        };
        let line = match editor.readline(&prompt) {
            Ok(line) => line,
            Err(ReadlineError::Interrupted) => continue,
            Err(ReadlineError::Eof) => break,
            Err(error) => {
                note(&format!("cannot read the terminal: {error}"));
                return EXIT_ERROR;
            }
        };
        if !line.trim().is_empty() {
            let _ = editor.add_history_entry(line.as_str());
            if let Some(path) = &history {
                let _ = editor.save_history(path);
            }
        }
        match run_shell_line(session, line.as_bytes(), &mut stdout.lock()) {
            Ok(Flow::Continue) => {}
            Ok(Flow::Exit) => break,
            Err(failure) => note(&failure.to_string()),
        }
    }
    EXIT_OK
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn hyphen_values_are_values() {
        let cli = Cli::try_parse_from(["kvsctl", "set", "k", "-5"]).unwrap();
        assert!(
            matches!(cli.command, Some(Command::Set { value, .. }) if value == "-5"),
            "a negative number is a value"
        );
        let cli =
            Cli::try_parse_from(["kvsctl", "--addr", "h:1", "get", "--min-seq", "3", "k"]).unwrap();
        assert!(matches!(
            cli.command,
            Some(Command::Get {
                min_seq: Some(3),
                ..
            })
        ));
        assert_eq!(cli.addr, "h:1");
    }

    #[test]
    fn shell_lines_split_like_a_shell() {
        let run = |line: &str| match parse_shell_line(line.as_bytes()) {
            Ok(ShellLine::Run(action)) => action,
            other => panic!("{line}: {other:?}"),
        };
        assert_eq!(
            run("set greeting \"hello world\""),
            Action::Set {
                key: b"greeting".to_vec(),
                value: b"hello world".to_vec()
            }
        );
        assert_eq!(
            run("SET k 'it''s'"),
            Action::Set {
                key: b"k".to_vec(),
                value: b"its".to_vec()
            }
        );
        assert_eq!(
            run("set k ''"),
            Action::Set {
                key: b"k".to_vec(),
                value: Vec::new()
            }
        );
        assert_eq!(run("keys"), Action::Keys { prefix: Vec::new() });
        assert_eq!(
            run("ping"),
            Action::Ping {
                payload: Vec::new()
            }
        );
        assert_eq!(parse_shell_line(b"   "), Ok(ShellLine::Empty));
        assert_eq!(parse_shell_line(b"# a comment"), Ok(ShellLine::Empty));
        assert_eq!(parse_shell_line(b"quit"), Ok(ShellLine::Exit));
        assert_eq!(parse_shell_line(b"help"), Ok(ShellLine::Help));
        assert_eq!(
            parse_shell_line(b"set k"),
            Err("usage: set KEY VALUE".to_string())
        );
        assert_eq!(
            parse_shell_line(b"stats now"),
            Err("usage: stats".to_string())
        );
        assert!(parse_shell_line(b"set k \"open")
            .unwrap_err()
            .starts_with("unbalanced quotes"));
        assert_eq!(
            parse_shell_line(b"frob x"),
            Err("unknown command 'frob': type help for the list".to_string())
        );
        // Bytes that are not UTF-8 go through as they are.
        assert_eq!(
            parse_shell_line(b"get \xff\xfe"),
            Ok(ShellLine::Run(Action::Get {
                key: vec![0xff, 0xfe],
                min_seq: None
            }))
        );
    }

    #[test]
    fn stats_are_lined_up() {
        let stats = "version:0.1.0\nrole:leader\nconnections_total:3\n\nodd line\n";
        assert_eq!(
            format_stats(stats),
            "version            0.1.0\n\
             role               leader\n\
             connections_total  3\n\
             odd line\n"
        );
        assert_eq!(format_stats(""), "");
    }

    #[test]
    fn a_bare_host_gets_the_default_port() {
        assert_eq!(with_default_port("db1"), "db1:7379");
        assert_eq!(with_default_port("db1:80"), "db1:80");
        assert_eq!(with_default_port("[::1]:80"), "[::1]:80");
    }
}
