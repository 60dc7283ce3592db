//! The live terminal view of `xlb top` (ratatui): a summary, a table of
//! services with their backends below each, the drops by reason, the keys.
use std::time::Duration;

use ratatui::{
    layout::{Constraint, Layout},
    style::{Modifier, Style},
    text::Line,
    widgets::{Block, Paragraph, Row, Table},
    Frame,
};

use super::rates::Rates;

/// What the view shows.
#[derive(Clone, Debug)]
pub struct Screen {
    /// The pin path read (shown in the title).
    pub pin_path: String,
    /// The refresh interval.
    pub interval: Duration,
    /// The last rates; `None` until the second sample.
    pub rates: Option<Rates>,
    /// The last failure to read the maps, if the last read failed.
    pub error: Option<String>,
}

/// A rate with an SI prefix: `950`, `1.2k`, `3.4M`, `1.1G`.
pub fn si(v: f64) -> String {
    match v {
        v if v >= 1e9 => format!("{:.1}G", v / 1e9),
        v if v >= 1e6 => format!("{:.1}M", v / 1e6),
        v if v >= 1e3 => format!("{:.1}k", v / 1e3),
        v => format!("{v:.0}"),
    }
}

/// Draws `screen` on the whole frame.
pub fn draw(frame: &mut Frame, screen: &Screen) {
    let drops = screen.rates.as_ref().map_or(0, |r| r.drops.len());
    let [head, services, drop_area, keys] = Layout::vertical([
        Constraint::Length(3),
        Constraint::Min(4),
        Constraint::Length(u16::try_from(drops).unwrap_or(u16::MAX).saturating_add(3)),
        Constraint::Length(1),
    ])
    .areas(frame.area());
    let title = format!(" xlb top — {} — every {:.1}s ", screen.pin_path, screen.interval.as_secs_f64());
    let summary = match (&screen.error, &screen.rates) {
        (Some(e), _) => format!("error: {e}"),
        (None, None) => "waiting for the second sample…".into(),
        (None, Some(r)) => format!(
            "packets/s {}   new flows/s {}   drops/s {}",
            si(r.packets_per_second),
            si(r.new_flows_per_second),
            si(r.drops.iter().map(|d| d.packets_per_second).sum())
        ),
    };
    frame.render_widget(Paragraph::new(summary).block(Block::bordered().title(title)), head);

    let bold = Style::default().add_modifier(Modifier::BOLD);
    let mut rows = Vec::new();
    for s in screen.rates.iter().flat_map(|r| &r.services) {
        rows.push(
            Row::new(vec![s.service.clone(), si(s.packets_per_second), format!("{}B", si(s.bytes_per_second))])
                .style(bold),
        );
        for b in &s.backends {
            rows.push(Row::new(vec![
                format!("  └ {}", b.address),
                si(b.packets_per_second),
                format!("{}B", si(b.bytes_per_second)),
            ]));
        }
    }
    let widths = [Constraint::Min(30), Constraint::Length(12), Constraint::Length(12)];
    let table = Table::new(rows, widths)
        .header(Row::new(["SERVICE / BACKEND", "PACKETS/S", "BYTES/S"]).style(bold))
        .block(Block::bordered().title(" services "));
    frame.render_widget(table, services);

    let rows = screen.rates.iter().flat_map(|r| &r.drops).map(|d| {
        let row = Row::new(vec![d.reason.clone(), si(d.packets_per_second)]);
        if d.packets_per_second > 0.0 {
            row.style(bold)
        } else {
            row
        }
    });
    let table = Table::new(rows, [Constraint::Min(30), Constraint::Length(12)])
        .header(Row::new(["REASON", "PACKETS/S"]).style(bold))
        .block(Block::bordered().title(" drops "));
    frame.render_widget(table, drop_area);
    frame.render_widget(Line::from(" q: quit"), keys);
}

#[cfg(test)]
mod tests {
    use ratatui::{backend::TestBackend, Terminal};

    use super::super::rates::{BackendRate, DropRate, ServiceRate};
    use super::*;

    #[test]
    fn si_prefixes() {
        assert_eq!(si(0.0), "0");
        assert_eq!(si(950.4), "950");
        assert_eq!(si(1250.0), "1.2k");
        assert_eq!(si(3_400_000.0), "3.4M");
        assert_eq!(si(1.1e9), "1.1G");
    }

    /// The text of every cell of a drawn screen.
    fn drawn(screen: &Screen) -> String {
        let mut t = Terminal::new(TestBackend::new(80, 20)).expect("test terminal");
        t.draw(|f| draw(f, screen)).expect("draw");
        let buf = t.backend().buffer();
        let mut s = String::new();
        for y in 0..buf.area.height {
            for x in 0..buf.area.width {
                s.push_str(buf[(x, y)].symbol());
            }
            s.push('\n');
        }
        s
    }

    #[test]
    fn shows_services_backends_and_drops() {
        let mut screen =
            Screen { pin_path: "/sys/fs/bpf/xlb".into(), interval: Duration::from_secs(1), rates: None, error: None };
        assert!(drawn(&screen).contains("waiting for the second sample"));
        screen.rates = Some(Rates {
            interval_seconds: 1.0,
            packets_per_second: 2500.0,
            new_flows_per_second: 12.0,
            services: vec![ServiceRate {
                service: "dns".into(),
                packets_per_second: 2000.0,
                bytes_per_second: 128_000.0,
                backends: vec![BackendRate {
                    address: "10.1.0.2:5353".into(),
                    packets_per_second: 2000.0,
                    bytes_per_second: 128_000.0,
                }],
            }],
            drops: vec![DropRate { reason: "drop_no_backend".into(), packets_per_second: 5.0 }],
        });
        let text = drawn(&screen);
        for want in
            ["packets/s 2.5k", "new flows/s 12", "dns", "└ 10.1.0.2:5353", "128.0kB", "drop_no_backend", "q: quit"]
        {
            assert!(text.contains(want), "{want:?} not on the screen:\n{text}");
        }
        screen.error = Some("no pinned xlb map here".into());
        assert!(drawn(&screen).contains("error: no pinned xlb map here"));
    }
}
