//! `condo image import|ls|rm`: the image store from the command line.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::{Args, Subcommand};

use condo_vmm::images::{default_root, ImageRecord, Progress, Stage, Store};
use condo_vmm::tenant::Tenant;

/// Exit code of a failed image command.
const EXIT_FAILED: i32 = 1;
/// Progress lines wait this long, so quick imports print none.
const PROGRESS_DELAY: Duration = Duration::from_millis(500);
/// At most one progress update per interval on a terminal, per this on a pipe or file.
const PROGRESS_TTY_INTERVAL: Duration = Duration::from_millis(200);
const PROGRESS_LOG_INTERVAL: Duration = Duration::from_secs(2);

/// `condo image ...`
#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    /// Import an OCI image layout (dir or tar), a docker-archive tar or a root filesystem
    /// directory; prints the image digest.
    Import(ImportArgs),
    /// List stored images.
    Ls(LsArgs),
    /// Remove a name (and the image when no name is left) or, given a digest, the image;
    /// refused while a tenant has the image attached.
    Rm(RmArgs),
}

/// Flags of `condo image import`.
#[derive(Debug, Args)]
pub struct ImportArgs {
    /// The image: OCI layout directory or tar, docker-archive tar, or root filesystem dir.
    path: PathBuf,
    /// Name it NAME[:TAG] (default: the name the archive carries, if any).
    #[arg(long, value_name = "NAME[:TAG]")]
    name: Option<String>,
}

/// Flags of `condo image ls`.
#[derive(Debug, Args)]
pub struct LsArgs {
    /// Print the records as JSON.
    #[arg(long)]
    json: bool,
}

/// Flags of `condo image rm`.
#[derive(Debug, Args)]
pub struct RmArgs {
    /// NAME[:TAG], digest or digest prefix (12+ hex digits).
    reference: String,
}

/// Runs an image command; returns the exit code.
pub fn run(command: ImageCommand) -> i32 {
    let result = Store::open(&default_root())
        .map_err(anyhow::Error::from)
        .and_then(|store| match command {
            ImageCommand::Import(args) => import(&store, args),
            ImageCommand::Ls(args) => ls(&store, args),
            ImageCommand::Rm(args) => rm(&store, args),
        });
    match result {
        Ok(()) => 0,
        Err(e) => {
            // Our errors already name their cause; `{e:#}` would print it twice.
            eprintln!("condo: {e}");
            EXIT_FAILED
        }
    }
}

/// Prints progress to stderr, throttled.
struct ProgressPrinter {
    start: Instant,
    last: Option<Instant>,
    interval: Duration,
    tty: bool,
    printed: bool,
}

impl ProgressPrinter {
    fn new() -> Self {
        let tty = std::io::stderr().is_terminal();
        ProgressPrinter {
            start: Instant::now(),
            last: None,
            interval: if tty {
                PROGRESS_TTY_INTERVAL
            } else {
                PROGRESS_LOG_INTERVAL
            },
            tty,
            printed: false,
        }
    }

    fn update(&mut self, p: Progress) {
        let now = Instant::now();
        let finished = p.total > 0 && p.done >= p.total;
        let due = self
            .last
            .is_none_or(|t| now.duration_since(t) >= self.interval);
        if now.duration_since(self.start) < PROGRESS_DELAY || !(due || finished && self.printed) {
            return;
        }
        self.last = Some(now);
        let what = match p.stage {
            Stage::Hashing => "hashing",
            Stage::Layers => "applying layers",
            Stage::Filesystem => "building the filesystem image",
        };
        let amount = match p.stage {
            Stage::Filesystem => String::new(),
            _ if p.total > 0 => format!(
                " {} / {} ({}%)",
                human_size(p.done),
                human_size(p.total),
                p.done.saturating_mul(100) / p.total
            ),
            _ => format!(" {}", human_size(p.done)),
        };
        let mut err = std::io::stderr().lock();
        let end = if self.tty { "\x1b[K\r" } else { "\n" };
        let _ = write!(err, "condo: {what}{amount}{end}");
        let _ = err.flush();
        self.printed = true;
    }

    fn done(&self) {
        if self.printed && self.tty {
            eprintln!();
        }
    }
}

fn import(store: &Store, args: ImportArgs) -> anyhow::Result<()> {
    let mut printer = ProgressPrinter::new();
    let started = Instant::now();
    let record = store.import(&args.path, args.name.as_deref(), &mut |p| printer.update(p));
    printer.done();
    let record = record?;
    let names = if record.names.is_empty() {
        "no name".to_string()
    } else {
        record.names.join(", ")
    };
    eprintln!(
        "condo: imported {} ({names}): {}, {} in {:.2} s",
        args.path.display(),
        record.fs_type,
        human_size(record.size),
        started.elapsed().as_secs_f64()
    );
    println!("{}", record.digest);
    Ok(())
}

fn ls(store: &Store, args: LsArgs) -> anyhow::Result<()> {
    let records = store.list()?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&records)?);
        return Ok(());
    }
    println!(
        "{:<32} {:<12} {:>10} {:<20}",
        "NAME", "DIGEST", "SIZE", "CREATED"
    );
    for r in &records {
        let names: Vec<&str> = if r.names.is_empty() {
            vec!["<none>"]
        } else {
            r.names.iter().map(String::as_str).collect()
        };
        for name in names {
            println!("{}", ls_line(name, r));
        }
    }
    Ok(())
}

fn ls_line(name: &str, r: &ImageRecord) -> String {
    let short = r.hex().get(..12).unwrap_or(r.hex());
    format!(
        "{name:<32} {short:<12} {:>10} {:<20}",
        human_size(r.size),
        utc_time(r.created)
    )
}

/// The first tenant with the image `digest` attached (tenants that cannot be read are
/// skipped: a broken run directory must not pin images forever).
fn tenant_using(digest: &str) -> Option<String> {
    Tenant::list().ok()?.into_iter().find_map(|tenant| {
        let config = tenant.config().ok()?;
        config
            .images
            .iter()
            .any(|image| image.digest == digest)
            .then(|| format!("tenant {}", tenant.name))
    })
}

fn rm(store: &Store, args: RmArgs) -> anyhow::Result<()> {
    let removed = store.remove_unless_used(&args.reference, &tenant_using)?;
    for name in &removed.names {
        println!("untagged: {name}");
    }
    if removed.image_removed {
        println!("deleted: {}", removed.digest);
    }
    Ok(())
}

fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// `YYYY-MM-DD HH:MM:SS` (UTC) from Unix seconds (Howard Hinnant's civil_from_days).
fn utc_time(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_times_and_sizes() {
        assert_eq!(utc_time(0), "1970-01-01 00:00:00");
        assert_eq!(utc_time(1_795_920_000), "2026-11-29 02:40:00");
        assert_eq!(utc_time(951_825_600), "2000-02-29 12:00:00");
        assert_eq!(human_size(512), "512 B");
        assert_eq!(human_size(3 << 20), "3.0 MiB");
    }
}
