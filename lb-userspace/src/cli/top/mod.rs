//! `xlb top`: packets/s and bytes/s per service and per backend, drops/s
//! by reason and new flows/s, from the counters in the pinned maps. Live in
//! the terminal ([`view`]), or one table of rates over one interval
//! (`--once`, and whenever stdout is not a terminal). The rates themselves
//! are computed in [`rates`], from two samples and the time between them.
use std::{
    io::IsTerminal as _,
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};
use ratatui::crossterm::event::{self, Event, KeyCode, KeyEvent, KeyEventKind, KeyModifiers};

use super::{Format, Output};
use crate::{
    bpf::view::{CachedView, MapsView},
    state::reader,
};

pub mod rates;
pub mod text;
pub mod view;

use rates::{BackendSample, Counts, Sample, ServiceSample};

/// What `xlb top` was asked for.
#[derive(Clone, Copy, Debug)]
pub struct TopArgs {
    /// Time between two samples (and between two refreshes).
    pub interval: Duration,
    /// One table of rates instead of the live view.
    pub once: bool,
    /// Output of `--once`.
    pub format: Format,
}

/// `xlb top`: the live view on a terminal, else one table of rates.
pub fn top(pin_path: &Path, args: TopArgs) -> Result<()> {
    let once = args.once || args.format.output == Output::Json || !std::io::stdout().is_terminal();
    if once {
        return top_once(pin_path, args.interval, args.format);
    }
    let mut cache = CachedView::new(pin_path.to_path_buf());
    // Fails here, before the terminal is taken, when nothing is pinned.
    let first = read_sample(&mut cache).with_context(|| format!("reading the maps under {}", pin_path.display()))?;
    let mut terminal = ratatui::init();
    let result = live(&mut terminal, &mut cache, first, pin_path, args.interval);
    ratatui::restore();
    result
}

/// Reads the counters of one [`Sample`] from the maps.
pub fn sample(maps: &MapsView) -> Result<Sample, reader::ReadError> {
    let services = reader::services(maps)?
        .into_iter()
        .map(|s| ServiceSample {
            counts: Counts { packets: s.packets, bytes: s.bytes },
            backends: s
                .backend_rows
                .into_iter()
                .filter(|b| b.address != reader::REJECT_ADDRESS)
                .map(|b| BackendSample { address: b.address, counts: Counts { packets: b.packets, bytes: b.bytes } })
                .collect(),
            name: s.name,
        })
        .collect();
    Ok(Sample { services, stats: reader::stats(maps)? })
}

/// A sample through the cache (opened again when an agent replaced the pins).
fn read_sample(cache: &mut CachedView) -> Result<(Sample, Instant)> {
    let s = sample(cache.get()?)?;
    Ok((s, Instant::now()))
}

/// `xlb top --once`: two samples `interval` apart, one table (or JSON) of rates.
fn top_once(pin_path: &Path, interval: Duration, fmt: Format) -> Result<()> {
    let maps = super::open(pin_path)?;
    let before = sample(&maps)?;
    let start = Instant::now();
    std::thread::sleep(interval);
    let after = sample(&maps)?;
    let r = rates::rates(&before, &after, start.elapsed());
    match fmt.output {
        Output::Json => super::print_json(&r),
        Output::Table => {
            print!("{}", text::render(&r, fmt.headers));
            Ok(())
        }
    }
}

/// Whether a key quits the live view: `q`, Esc or Ctrl-C (the terminal is
/// in raw mode, so Ctrl-C arrives as a key, not as SIGINT).
pub fn quits(key: &KeyEvent) -> bool {
    key.kind == KeyEventKind::Press
        && match key.code {
            KeyCode::Char('q' | 'Q') | KeyCode::Esc => true,
            KeyCode::Char('c') => key.modifiers.contains(KeyModifiers::CONTROL),
            _ => false,
        }
}

/// The live view: a new sample every `interval`, drawn against the one
/// before, until a key [`quits`]. A failed read is shown, and retried.
fn live(
    terminal: &mut ratatui::DefaultTerminal,
    cache: &mut CachedView,
    first: (Sample, Instant),
    pin_path: &Path,
    interval: Duration,
) -> Result<()> {
    let mut screen = view::Screen { pin_path: pin_path.display().to_string(), interval, rates: None, error: None };
    let mut last = first;
    loop {
        terminal.draw(|f| view::draw(f, &screen)).context("drawing the terminal")?;
        let deadline = last.1 + interval;
        // Keys until the next sample (a resize redraws).
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || !event::poll(left).context("reading the terminal")? {
                break;
            }
            match event::read().context("reading the terminal")? {
                Event::Key(k) if quits(&k) => return Ok(()),
                Event::Resize(..) => {
                    terminal.draw(|f| view::draw(f, &screen)).context("drawing the terminal")?;
                }
                _ => {}
            }
        }
        match read_sample(cache) {
            Ok(next) => {
                screen.rates = Some(rates::rates(&last.0, &next.0, next.1 - last.1));
                screen.error = None;
                last = next;
            }
            Err(e) => {
                screen.error = Some(format!("{e:#}"));
                last.1 = Instant::now();
            }
        }
    }
}

/// `--interval`: seconds (`1`, `0.5`, `2s`) or milliseconds (`500ms`),
/// from 100 ms to one hour.
pub fn parse_interval(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let secs = if let Some(ms) = t.strip_suffix("ms") {
        ms.trim().parse::<f64>().map(|v| v / 1000.0)
    } else {
        t.strip_suffix('s').unwrap_or(t).trim().parse::<f64>()
    }
    .map_err(|_| format!("{s:?} is not an interval; use seconds (1, 0.5, 2s) or milliseconds (500ms)"))?;
    if !(0.1..=3600.0).contains(&secs) {
        return Err(format!("{s:?}: the interval must be from 100ms to 3600s"));
    }
    Ok(Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals() {
        assert_eq!(parse_interval("1"), Ok(Duration::from_secs(1)));
        assert_eq!(parse_interval("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_interval("0.5"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_interval("250ms"), Ok(Duration::from_millis(250)));
        for bad in ["0", "-1", "50ms", "3601", "x", "", "1m", "NaN"] {
            assert!(parse_interval(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn q_esc_and_ctrl_c_quit() {
        let key = |code, modifiers| KeyEvent::new(code, modifiers);
        assert!(quits(&key(KeyCode::Char('q'), KeyModifiers::NONE)));
        assert!(quits(&key(KeyCode::Esc, KeyModifiers::NONE)));
        assert!(quits(&key(KeyCode::Char('c'), KeyModifiers::CONTROL)));
        assert!(!quits(&key(KeyCode::Char('c'), KeyModifiers::NONE)));
        assert!(!quits(&key(KeyCode::Char('x'), KeyModifiers::NONE)));
        let mut release = key(KeyCode::Char('q'), KeyModifiers::NONE);
        release.kind = KeyEventKind::Release;
        assert!(!quits(&release), "only a press quits");
    }
}
