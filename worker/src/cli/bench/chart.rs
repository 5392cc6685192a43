//! The SVG bar chart of `rbees bench --chart`: prompt and decode tokens/s
//! per backend, side by side, with the range of the repetitions.

use std::path::Path;

use anyhow::{anyhow, Result};
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::report::{Document, Spread};

const BAR_COLORS: [RGBColor; 6] = [
    RGBColor(0x4c, 0x72, 0xb0),
    RGBColor(0xdd, 0x84, 0x52),
    RGBColor(0x55, 0xa8, 0x68),
    RGBColor(0xc4, 0x4e, 0x52),
    RGBColor(0x81, 0x72, 0xb3),
    RGBColor(0x93, 0x78, 0x60),
];

/// One panel: a bar per backend that has a value.
fn panel(
    area: &DrawingArea<SVGBackend<'_>, plotters::coord::Shift>,
    title: &str,
    bars: &[(String, Spread)],
) -> Result<()> {
    let top = bars.iter().map(|(_, s)| s.max).fold(0.0, f64::max).max(1.0) * 1.15;
    let labels: Vec<String> = bars.iter().map(|(l, _)| l.clone()).collect();
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(64)
        // A segmented range `0..k` has k + 1 segments (one per value and the
        // end); `0..0` is degenerate, so a single bar shares the axis with an
        // empty slot.
        .build_cartesian_2d((0..bars.len().max(2) - 1).into_segmented(), 0f64..top)
        .map_err(|e| anyhow!("chart: {e}"))?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .light_line_style(WHITE)
        .y_desc("tokens/s")
        .y_label_formatter(&|v| format!("{v:.0}"))
        .x_label_formatter(&|v| match v {
            SegmentValue::CenterOf(i) => labels.get(*i).cloned().unwrap_or_default(),
            _ => String::new(),
        })
        .draw()
        .map_err(|e| anyhow!("chart: {e}"))?;
    chart
        .draw_series(bars.iter().enumerate().map(|(i, (_, s))| {
            let color = BAR_COLORS[i % BAR_COLORS.len()];
            let mut bar = Rectangle::new(
                [
                    (SegmentValue::Exact(i), 0.0),
                    (SegmentValue::Exact(i + 1), s.median),
                ],
                color.filled(),
            );
            bar.set_margin(0, 0, 18, 18);
            bar
        }))
        .map_err(|e| anyhow!("chart: {e}"))?;
    chart
        .draw_series(bars.iter().enumerate().map(|(i, (_, s))| {
            ErrorBar::new_vertical(
                SegmentValue::CenterOf(i),
                s.min,
                s.median,
                s.max,
                BLACK.filled(),
                10,
            )
        }))
        .map_err(|e| anyhow!("chart: {e}"))?;
    chart
        .draw_series(bars.iter().enumerate().map(|(i, (_, s))| {
            Text::new(
                format!("{:.1}", s.median),
                (SegmentValue::CenterOf(i), s.max + top * 0.01),
                ("sans-serif", 14)
                    .into_font()
                    .color(&BLACK)
                    .pos(Pos::new(HPos::Center, VPos::Bottom)),
            )
        }))
        .map_err(|e| anyhow!("chart: {e}"))?;
    Ok(())
}

/// Writes the chart of `doc` to `path` (SVG).
pub fn write_chart(doc: &Document, path: &Path) -> Result<()> {
    let label = |row: &super::report::Row| match &row.measured {
        Some(m) if m.device == "cpu" => m.backend.clone(),
        Some(m) => format!("{} ({})", m.backend, m.device),
        None => row.requested.clone(),
    };
    let pick = |f: fn(&super::report::Row) -> Option<Spread>| -> Vec<(String, Spread)> {
        doc.results
            .iter()
            .filter_map(|row| f(row).map(|s| (label(row), s)))
            .collect()
    };
    let model = Path::new(&doc.model)
        .file_name()
        .map_or(doc.model.clone(), |n| n.to_string_lossy().into_owned());
    let root = SVGBackend::new(path, (960, 460)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow!("chart: {e}"))?;
    let (header, body) = root.split_vertically(36);
    header
        .titled(
            &format!(
                "{model}: {} threads, medians of {} runs (bars: min–max)",
                doc.threads, doc.reps
            ),
            ("sans-serif", 16),
        )
        .map_err(|e| anyhow!("chart: {e}"))?;
    let (left, right) = body.split_horizontally(480);
    panel(
        &left,
        &format!("prompt processing (pp{})", doc.pp),
        &pick(|r| r.pp),
    )?;
    panel(&right, &format!("decode (tg{})", doc.tg), &pick(|r| r.tg))?;
    root.present()
        .map_err(|e| anyhow!("cannot write {}: {e}", path.display()))?;
    Ok(())
}
