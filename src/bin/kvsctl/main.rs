//! kvsctl: the command line of kvs. One command per run, or a shell reading commands from
//! stdin (rustyline on a terminal, plain lines from a pipe). Talks to the server only through
//! `kvs::client`; what it adds is argument parsing, output formats, exit statuses, following
//! a follower's NOT_LEADER to the leader, and reconnecting after a lost connection.
//!
//! The commands are defined once, in `command.rs`: the one-shot form parses the command line
//! with that table, and the shell parses each line with the same table.

mod command;
mod output;
mod txn_spec;

use std::ffi::OsString;
use std::fmt;
use std::io::{self, BufRead, IsTerminal, Read, Write};
use std::os::unix::ffi::OsStringExt;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use kvs::auth::Secret;
use kvs::client::{Client, ClientError, ClientOptions};
use kvs::limits;

use command::{execute, Command, Style};

const EXIT_OK: u8 = 0;
const EXIT_NOT_FOUND: u8 = 1;
const EXIT_ERROR: u8 = 2;
const EXIT_CONDITION_FAILED: u8 = 3;

/// The longest value `set KEY -` (or `txn`) reads from stdin: the most any kvsd can accept.
pub const STDIN_VALUE_BYTES_MAX: u64 = limits::VALUE_BYTES_MAX_CEILING as u64;
/// The longest shell line read from a pipe: a largest value, quoted, with room to spare.
const SHELL_LINE_BYTES_MAX: u64 = 2 * limits::FRAME_BYTES_MAX_CEILING as u64;
const HISTORY_FILE_NAME: &str = ".kvsctl_history";

const AFTER_HELP: &str = "\
Shell:
  Without a command, kvsctl reads commands from stdin: an interactive shell with history
  (~/.kvsctl_history) on a terminal, or one command per line, without a prompt, from a pipe:
      printf 'set a 1\\nget a\\n' | kvsctl
  The commands and their options are the same as on the command line (help lists them,
  help COMMAND or COMMAND --help explains one), plus exit (or quit). Words are split as a
  POSIX shell splits them, so quote values with spaces:
      set greeting \"hello world\"
  Output is as for the one-shot commands, except that a missing key prints (nil).
  An error is printed and the shell goes on; a lost connection is made again by the next
  command. In the shell, \"-\" is a plain value, not stdin, and txn reads --file PATH.

Authentication:
  A server started with --auth-file wants its secret before anything else: give kvsctl the
  same file with --auth-file, or the secret itself in KVS_AUTH (--auth-file wins). It is sent
  on every connection kvsctl makes, reconnections and redirections included.

Followers:
  A write sent to a follower is answered NOT_LEADER with the leader's address; kvsctl sends it
  again to the leader, once, and says so on stderr.

Exit status:
  0  success
  1  the key does not exist (get, del, ttl, expire, persist)
  2  any error: bad usage, no connection, the server answered ERROR (its message is printed
     on stderr after \"kvsctl: \"). A shell reading from a pipe exits 2 if any command failed.
  3  a condition failed and nothing was written (set --nx/--xx/--if-seq, persist, txn
     FAILURE)

JSON:
  With --json every command prints one JSON object per line (per key for keys and mget, per
  change for watch): e.g. {\"ok\":true,\"seq\":7}. Keys and values that are not UTF-8 are given
  in hex, as key_hex and value_hex.";

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

    /// Print JSON, one object per line, for scripts
    #[arg(long, global = true)]
    json: bool,

    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    OneShot,
    Shell,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Done,
    NotFound,
    ConditionFailed,
}

#[derive(Debug)]
pub enum Failure {
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
pub struct Session {
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

    /// The connection itself, for a command that keeps it (watch); the next command makes a
    /// new one.
    fn take_client(&mut self) -> Result<Client, ClientError> {
        self.connect()?;
        Ok(self.client.take().expect("just connected"))
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
        Some(command) => one_shot(&mut session, command, cli.json),
        None if io::stdin().is_terminal() => interactive(&mut session, cli.json),
        None => piped(&mut session, cli.json),
    };
    ExitCode::from(status)
}

fn one_shot(session: &mut Session, command: Command, json: bool) -> u8 {
    let stdout = io::stdout();
    let mut out = stdout.lock();
    let style = Style {
        mode: Mode::OneShot,
        json,
    };
    let result = execute(session, &command, style, &mut out).and_then(|outcome| {
        out.flush()?;
        Ok(outcome)
    });
    match result {
        Ok(Outcome::Done) => EXIT_OK,
        Ok(Outcome::NotFound) => EXIT_NOT_FOUND,
        Ok(Outcome::ConditionFailed) => EXIT_CONDITION_FAILED,
        // A reader that stopped reading (`kvsctl keys | head`) has what it wanted.
        Err(Failure::Output(error)) if error.kind() == io::ErrorKind::BrokenPipe => EXIT_OK,
        Err(failure) => {
            note(&failure.to_string());
            EXIT_ERROR
        }
    }
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
pub fn note(message: &str) {
    let _ = writeln!(io::stderr().lock(), "kvsctl: {message}");
}

pub fn not_found() {
    let _ = writeln!(io::stderr().lock(), "(not found)");
}

// ---------------------------------------------------------------------------------------
// The shell.

/// A shell line parsed with the same command table as the command line.
#[derive(Parser, Debug)]
#[command(
    name = "kvsctl",
    no_binary_name = true,
    disable_version_flag = true,
    help_template = "Commands:\n{subcommands}\n\nhelp COMMAND (or COMMAND --help) explains one."
)]
struct ShellArgs {
    #[command(subcommand)]
    command: ShellCommand,
}

#[derive(Subcommand, Debug)]
enum ShellCommand {
    #[command(flatten)]
    Run(Command),
    /// Leave the shell (or Ctrl-D)
    #[command(alias = "quit")]
    Exit,
}

#[derive(Debug)]
enum ShellLine {
    Empty,
    Help(String),
    Exit,
    Run(Command),
}

fn parse_shell_line(line: &[u8]) -> Result<ShellLine, String> {
    let words = shlex::bytes::split(line)
        .ok_or("unbalanced quotes or a trailing backslash: close the quote".to_string())?;
    let Some((name, args)) = words.split_first() else {
        return Ok(ShellLine::Empty);
    };
    // Command names are not case-sensitive in the shell (SET, Get), as in redis-cli.
    let name = String::from_utf8_lossy(name).to_lowercase();
    if name == "?" {
        return parse_shell_line(b"help");
    }
    let words = std::iter::once(OsString::from(name.clone()))
        .chain(args.iter().map(|arg| OsString::from_vec(arg.clone())));
    match ShellArgs::try_parse_from(words) {
        Ok(ShellArgs {
            command: ShellCommand::Run(command),
        }) => Ok(ShellLine::Run(command)),
        Ok(ShellArgs {
            command: ShellCommand::Exit,
        }) => Ok(ShellLine::Exit),
        Err(error) => {
            use clap::error::ErrorKind;
            match error.kind() {
                ErrorKind::DisplayHelp | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
                    let mut text = error.render().to_string();
                    if !text.ends_with('\n') {
                        text.push('\n');
                    }
                    Ok(ShellLine::Help(text))
                }
                ErrorKind::InvalidSubcommand => Err(format!(
                    "unknown command '{}': type help for the list",
                    name.escape_debug()
                )),
                _ => {
                    // clap's text, without its "error: " (kvsctl prefixes its own) and tips.
                    let text = error.render().to_string();
                    let text = text.strip_prefix("error: ").unwrap_or(&text);
                    let text: Vec<&str> = text
                        .lines()
                        .filter(|line| !line.trim().is_empty() && !line.contains("--help"))
                        .map(str::trim)
                        .collect();
                    Err(text.join(" ").replace(" Usage:", "; usage:"))
                }
            }
        }
    }
}

enum Flow {
    Continue,
    Exit,
}

/// Runs one shell line; `Err` when the command failed (already reported on stderr).
fn run_shell_line(
    session: &mut Session,
    line: &[u8],
    json: bool,
    out: &mut dyn Write,
) -> Result<Flow, Failure> {
    let style = Style {
        mode: Mode::Shell,
        json,
    };
    let result = match parse_shell_line(line) {
        Ok(ShellLine::Empty) => Ok(Flow::Continue),
        Ok(ShellLine::Help(text)) => out
            .write_all(text.as_bytes())
            .map(|_| Flow::Continue)
            .map_err(Failure::Output),
        Ok(ShellLine::Exit) => Ok(Flow::Exit),
        Ok(ShellLine::Run(command)) => {
            execute(session, &command, style, out).map(|_| Flow::Continue)
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
fn piped(session: &mut Session, json: bool) -> u8 {
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
        match run_shell_line(session, text, json, &mut out) {
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
fn interactive(session: &mut Session, json: bool) -> u8 {
    use rustyline::error::ReadlineError;

    let mut editor = match rustyline::DefaultEditor::new() {
        Ok(editor) => editor,
        Err(error) => {
            note(&format!("no line editing ({error}); reading plain lines"));
            return piped(session, json);
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
        match run_shell_line(session, line.as_bytes(), json, &mut stdout.lock()) {
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
        ShellArgs::command().debug_assert();
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
        let cli = Cli::try_parse_from(["kvsctl", "incr", "n", "-2", "--json"]).unwrap();
        assert!(matches!(cli.command, Some(Command::Incr { by: -2, .. })));
        assert!(cli.json);
    }

    #[test]
    fn the_shell_and_the_command_line_share_one_table() {
        let run = |line: &str| match parse_shell_line(line.as_bytes()) {
            Ok(ShellLine::Run(command)) => command,
            other => panic!("{line}: {other:?}"),
        };
        assert!(matches!(
            run("set greeting \"hello world\""),
            Command::Set { key, value, .. } if key == "greeting" && value == "hello world"
        ));
        assert!(matches!(
            run("SET k 'it''s' --ttl 10s --nx"),
            Command::Set { value, ttl: Some(10_000), nx: true, .. } if value == "its"
        ));
        assert!(matches!(run("set k ''"), Command::Set { value, .. } if value.is_empty()));
        assert!(matches!(run("keys"), Command::Keys { prefix: None }));
        assert!(matches!(run("ping"), Command::Ping { text: None }));
        assert!(matches!(run("incr n 5"), Command::Incr { by: 5, .. }));
        assert!(matches!(
            run("watch app/ --from-seq 9"),
            Command::Watch { from_seq: 9, .. }
        ));
        assert!(matches!(parse_shell_line(b"   "), Ok(ShellLine::Empty)));
        assert!(matches!(
            parse_shell_line(b"# a comment"),
            Ok(ShellLine::Empty)
        ));
        assert!(matches!(parse_shell_line(b"quit"), Ok(ShellLine::Exit)));
        assert!(matches!(parse_shell_line(b"exit"), Ok(ShellLine::Exit)));
        match parse_shell_line(b"help") {
            Ok(ShellLine::Help(text)) => {
                for name in ["get", "set", "mget", "txn", "watch", "exit"] {
                    assert!(text.contains(name), "{name} missing from {text}");
                }
            }
            other => panic!("{other:?}"),
        }
        assert!(
            matches!(parse_shell_line(b"help set"), Ok(ShellLine::Help(text)) if text.contains("--if-seq"))
        );
        let usage = parse_shell_line(b"set k").unwrap_err();
        assert!(usage.contains("<VALUE>"), "{usage}");
        assert!(parse_shell_line(b"stats now").is_err());
        assert!(parse_shell_line(b"set k v --nx --xx").is_err());
        assert!(parse_shell_line(b"set k \"open")
            .unwrap_err()
            .starts_with("unbalanced quotes"));
        assert_eq!(
            parse_shell_line(b"frob x").unwrap_err(),
            "unknown command 'frob': type help for the list".to_string()
        );
        // Bytes that are not UTF-8 go through as they are.
        match parse_shell_line(b"get \xff\xfe") {
            Ok(ShellLine::Run(Command::Get { key, .. })) => {
                assert_eq!(key.into_vec(), vec![0xff, 0xfe])
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_bare_host_gets_the_default_port() {
        assert_eq!(with_default_port("db1"), "db1:7379");
        assert_eq!(with_default_port("db1:80"), "db1:80");
        assert_eq!(with_default_port("[::1]:80"), "[::1]:80");
    }
}
