#include "client/plot.h"

#include <algorithm>
#include <array>
#include <charconv>
#include <cmath>
#include <tuple>
#include <utility>

#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace transferd::client {

std::vector<EpochPoint> EpochPointsFromProto(
    const google::protobuf::RepeatedPtrField<transferd::v1::EpochMetrics>&
        history) {
  std::vector<EpochPoint> out;
  out.reserve(static_cast<size_t>(history.size()));
  for (const transferd::v1::EpochMetrics& e : history) {
    EpochPoint p;
    p.epoch = e.epoch();
    p.stage = e.stage();
    p.loss = e.loss();
    p.accuracy = e.accuracy();
    if (e.has_val_loss()) p.val_loss = e.val_loss();
    if (e.has_val_accuracy()) p.val_accuracy = e.val_accuracy();
    p.learning_rate = e.learning_rate();
    p.seconds = e.seconds();
    out.push_back(p);
  }
  return out;
}

int PlotPanel::Column(double epoch) const {
  const double f = (epoch - x_min) / (x_max - x_min);
  return area.x + static_cast<int>(std::lround(f * (area.width - 1)));
}

int PlotPanel::Row(double value) const {
  const double f = (value - y_min) / (y_max - y_min);
  return area.y + area.height - 1 -
         static_cast<int>(std::lround(f * (area.height - 1)));
}

namespace {

const cv::Scalar kBlack(0, 0, 0);
const cv::Scalar kWhite(255, 255, 255);
const cv::Scalar kLegendFrame(204, 204, 204);
constexpr int kFont = cv::FONT_HERSHEY_SIMPLEX;

// Sizes of one figure, scaled from a 640x480 matplotlib figure.
struct Style {
  explicit Style(cv::Size panel)
      : s(std::clamp(std::min(panel.width / 640.0, panel.height / 480.0), 0.5,
                     3.0)),
        tick_font(0.42 * s),
        label_font(0.5 * s),
        title_font(0.6 * s),
        text_thickness(std::max(1, static_cast<int>(std::lround(s)))),
        line_thickness(std::max(1, static_cast<int>(std::lround(1.5 * s)))),
        marker_radius(std::max(2, static_cast<int>(std::lround(3.5 * s)))),
        pad(std::max(3, static_cast<int>(std::lround(8 * s)))),
        tick_length(std::max(2, static_cast<int>(std::lround(4 * s)))) {}
  double s;
  double tick_font, label_font, title_font;
  int text_thickness, line_thickness, marker_radius, pad, tick_length;
};

cv::Size TextSize(const std::string& text, double scale, int thickness,
                  int* baseline = nullptr) {
  int b = 0;
  cv::Size size = cv::getTextSize(text, kFont, scale, thickness, &b);
  if (baseline != nullptr) *baseline = b;
  return size;
}

// Draws `text` with its box's top-left corner at `top_left`.
void PutText(cv::Mat& image, const std::string& text, cv::Point top_left,
             double scale, int thickness, const cv::Scalar& color) {
  const cv::Size size = TextSize(text, scale, thickness);
  cv::putText(image, text, cv::Point(top_left.x, top_left.y + size.height),
              kFont, scale, color, thickness, cv::LINE_AA);
}

// Text turned 90 degrees counter-clockwise (a y-axis label), centred on
// `center`. Dark text on the white figure, merged with a per-pixel minimum.
void PutVerticalText(cv::Mat& image, const std::string& text, cv::Point center,
                     double scale, int thickness) {
  int baseline = 0;
  const cv::Size size = TextSize(text, scale, thickness, &baseline);
  cv::Mat strip(size.height + baseline + 2, size.width + 2, CV_8UC3, kWhite);
  cv::putText(strip, text, cv::Point(1, size.height + 1), kFont, scale, kBlack,
              thickness, cv::LINE_AA);
  cv::Mat turned;
  cv::rotate(strip, turned, cv::ROTATE_90_COUNTERCLOCKWISE);
  cv::Rect where(center.x - turned.cols / 2, center.y - turned.rows / 2,
                 turned.cols, turned.rows);
  const cv::Rect clipped = where & cv::Rect(0, 0, image.cols, image.rows);
  if (clipped.empty()) return;
  cv::Mat target = image(clipped);
  cv::Mat source = turned(cv::Rect(clipped.x - where.x, clipped.y - where.y,
                                   clipped.width, clipped.height));
  cv::min(target, source, target);
}

// Tick positions: multiples of 1, 2, 2.5 or 5 times a power of ten, at most
// about `max_ticks` of them inside [lo, hi]. `integers` keeps the step >= 1.
std::vector<double> Ticks(double lo, double hi, int max_ticks, bool integers,
                          double* step_out) {
  const double raw = (hi - lo) / std::max(1, max_ticks);
  const double magnitude = std::pow(10.0, std::floor(std::log10(raw)));
  double step = 10 * magnitude;
  for (double m : {1.0, 2.0, 2.5, 5.0, 10.0}) {
    if (m * magnitude >= raw) {
      step = m * magnitude;
      break;
    }
  }
  if (integers) step = std::max(1.0, std::round(step));
  std::vector<double> ticks;
  const double epsilon = step * 1e-9;
  for (double t = std::ceil((lo - epsilon) / step) * step; t <= hi + epsilon;
       t += step) {
    ticks.push_back(std::abs(t) < epsilon ? 0.0 : t);
    if (ticks.size() > 100) break;
  }
  *step_out = step;
  return ticks;
}

// Decimals that show every multiple of `step` exactly (0.25 -> 2).
int Decimals(double step) {
  int d = 0;
  double scaled = step;
  while (d < 8 &&
         std::abs(scaled - std::round(scaled)) > 1e-6 * std::max(1.0, scaled)) {
    scaled *= 10;
    ++d;
  }
  return d;
}

// [lo, hi] of the finite values with a 5% margin (matplotlib's), or a
// small interval around a single value.
std::pair<double, double> Range(const std::vector<double>& values,
                                double min_half_width) {
  double lo = INFINITY, hi = -INFINITY;
  for (double v : values) {
    if (!std::isfinite(v)) continue;
    lo = std::min(lo, v);
    hi = std::max(hi, v);
  }
  if (!std::isfinite(lo)) return {0.0, 1.0};
  if (hi - lo < 1e-12) {
    const double half = std::max(min_half_width, std::abs(lo) * 0.05);
    return {lo - half, hi + half};
  }
  const double margin = 0.05 * (hi - lo);
  return {lo - margin, hi + margin};
}

struct Series {
  std::vector<double> train;
  std::vector<std::optional<double>> validation;
  std::string train_label, validation_label;
};

enum class LegendKind { kMarker, kLine, kDashed };

void DrawDashedVertical(cv::Mat& image, int x, int y0, int y1,
                        const Style& style) {
  const int dash = std::max(3, static_cast<int>(std::lround(6 * style.s)));
  const int gap = std::max(2, static_cast<int>(std::lround(4 * style.s)));
  const int thickness = std::max(1, static_cast<int>(std::lround(style.s)));
  for (int y = y0; y <= y1; y += dash + gap) {
    cv::line(image, cv::Point(x, y), cv::Point(x, std::min(y + dash - 1, y1)),
             kBoundaryColor, thickness, cv::LINE_8);
  }
}

void DrawLegendSample(cv::Mat& image, LegendKind kind, cv::Point left,
                      int width, const Style& style) {
  const cv::Point right(left.x + width, left.y);
  switch (kind) {
    case LegendKind::kMarker:
      cv::circle(image, cv::Point((left.x + right.x) / 2, left.y),
                 style.marker_radius, kCurveColor, cv::FILLED, cv::LINE_AA);
      break;
    case LegendKind::kLine:
      cv::line(image, left, right, kCurveColor, style.line_thickness,
               cv::LINE_AA);
      break;
    case LegendKind::kDashed: {
      const int dash = std::max(3, static_cast<int>(std::lround(6 * style.s)));
      const int gap = std::max(2, static_cast<int>(std::lround(4 * style.s)));
      for (int x = left.x; x <= right.x; x += dash + gap) {
        cv::line(
            image, cv::Point(x, left.y),
            cv::Point(std::min(x + dash - 1, right.x), left.y), kBoundaryColor,
            std::max(1, static_cast<int>(std::lround(style.s))), cv::LINE_8);
      }
      break;
    }
  }
}

// Sets the panel's epoch and value ranges; returns whether any validation
// value exists.
bool SetRanges(const std::vector<EpochPoint>& history, const Series& series,
               PlotPanel* panel) {
  std::vector<double> epochs;
  for (const EpochPoint& p : history) epochs.push_back(p.epoch);
  std::vector<double> values = series.train;
  bool any_validation = false;
  for (const std::optional<double>& v : series.validation) {
    if (v.has_value()) {
      values.push_back(*v);
      any_validation = true;
    }
  }
  {
    const double first = epochs.front(), last = epochs.back();
    const double margin = std::max(0.5, 0.05 * (last - first));
    panel->x_min = first - margin;
    panel->x_max = last + margin;
  }
  std::tie(panel->y_min, panel->y_max) = Range(values, 0.05);
  return any_validation;
}

// Ticks, tick labels and text sizes: what sets a panel's margins.
struct PanelLayout {
  std::vector<double> x_ticks, y_ticks;
  std::vector<std::string> y_labels;
  int tick_text_height = 0;
  cv::Size title_size, x_label_size;
  int y_label_height = 0;
};

// Ticks first: their labels set the margins. Sets `panel->area`.
PanelLayout LayOutPanel(cv::Rect box, const std::string& title,
                        const std::string& y_label, const Style& style,
                        PlotPanel* panel) {
  PanelLayout layout;
  const int approx_ticks_x =
      std::clamp(box.width / static_cast<int>(80 * style.s), 2, 10);
  const int approx_ticks_y =
      std::clamp(box.height / static_cast<int>(60 * style.s), 2, 10);
  double x_step = 1, y_step = 1;
  layout.x_ticks = Ticks(panel->x_min, panel->x_max, approx_ticks_x,
                         /*integers=*/true, &x_step);
  layout.y_ticks = Ticks(panel->y_min, panel->y_max, approx_ticks_y,
                         /*integers=*/false, &y_step);
  const int y_decimals = Decimals(y_step);
  int y_label_width = 0;
  for (double t : layout.y_ticks) {
    layout.y_labels.push_back(absl::StrFormat("%.*f", y_decimals, t));
    y_label_width =
        std::max(y_label_width,
                 TextSize(layout.y_labels.back(), style.tick_font, 1).width);
  }
  layout.tick_text_height = TextSize("0", style.tick_font, 1).height;
  layout.title_size = TextSize(title, style.title_font, style.text_thickness);
  int label_baseline = 0;
  layout.x_label_size =
      TextSize("Epochs", style.label_font, 1, &label_baseline);
  layout.y_label_height =
      TextSize(y_label, style.label_font, 1).height + label_baseline;

  const int left = style.pad + layout.y_label_height + style.pad +
                   y_label_width + style.tick_length + style.pad / 2;
  const int right = 2 * style.pad;
  const int top =
      style.pad + layout.title_size.height + style.pad + style.pad / 2;
  const int bottom = style.tick_length + style.pad / 2 +
                     layout.tick_text_height + style.pad +
                     layout.x_label_size.height + label_baseline + style.pad;
  panel->area = cv::Rect(box.x + left, box.y + top,
                         std::max(16, box.width - left - right),
                         std::max(16, box.height - top - bottom));
  return layout;
}

// Ticks and their labels.
void DrawTicks(cv::Mat& image, const PanelLayout& layout, const Style& style,
               const PlotPanel& panel) {
  const cv::Rect& a = panel.area;
  for (double t : layout.x_ticks) {
    const int x = panel.Column(t);
    cv::line(image, cv::Point(x, a.y + a.height),
             cv::Point(x, a.y + a.height + style.tick_length), kBlack, 1,
             cv::LINE_8);
    const std::string text = absl::StrFormat("%.0f", t);
    const cv::Size size = TextSize(text, style.tick_font, 1);
    PutText(image, text,
            cv::Point(x - size.width / 2,
                      a.y + a.height + style.tick_length + style.pad / 2),
            style.tick_font, 1, kBlack);
  }
  for (size_t i = 0; i < layout.y_ticks.size(); ++i) {
    const int y = panel.Row(layout.y_ticks[i]);
    cv::line(image, cv::Point(a.x - style.tick_length, y),
             cv::Point(a.x - 1, y), kBlack, 1, cv::LINE_8);
    const cv::Size size = TextSize(layout.y_labels[i], style.tick_font, 1);
    PutText(image, layout.y_labels[i],
            cv::Point(a.x - style.tick_length - style.pad / 2 - size.width,
                      y - size.height / 2),
            style.tick_font, 1, kBlack);
  }
}

// Axis labels.
void DrawAxisLabels(cv::Mat& image, cv::Rect box, const std::string& y_label,
                    const PanelLayout& layout, const Style& style,
                    const PlotPanel& panel) {
  const cv::Rect& a = panel.area;
  PutText(image, "Epochs",
          cv::Point(a.x + (a.width - layout.x_label_size.width) / 2,
                    a.y + a.height + style.tick_length + style.pad / 2 +
                        layout.tick_text_height + style.pad),
          style.label_font, 1, kBlack);
  PutVerticalText(image, y_label,
                  cv::Point(box.x + style.pad + layout.y_label_height / 2,
                            a.y + a.height / 2),
                  style.label_font, 1);
}

// Stage boundaries: halfway between the stages' epochs, with the new
// stage's number at the top.
void DrawStageBoundaries(cv::Mat& image, const std::vector<EpochPoint>& history,
                         const Style& style, PlotPanel* panel,
                         std::vector<cv::Point>* obstacles) {
  const cv::Rect& a = panel->area;
  for (size_t i = 1; i < history.size(); ++i) {
    if (history[i].stage == history[i - 1].stage) continue;
    const double at = (history[i - 1].epoch + history[i].epoch) / 2.0;
    const int x = panel->Column(at);
    panel->boundary_columns.push_back(x);
    DrawDashedVertical(image, x, a.y + 1, a.y + a.height - 2, style);
    const std::string text = absl::StrCat("stage ", history[i].stage + 1);
    const cv::Size size = TextSize(text, style.tick_font, 1);
    const cv::Point at_point(x + style.pad / 2, a.y + style.pad / 2);
    if (at_point.x + size.width < a.x + a.width) {
      PutText(image, text, at_point, style.tick_font, 1, kBoundaryColor);
      for (int dx = 0; dx <= size.width; dx += std::max(1, size.width / 4)) {
        obstacles->emplace_back(at_point.x + dx, at_point.y + size.height / 2);
      }
    }
  }
}

void DrawValidationCurve(cv::Mat& image, const std::vector<EpochPoint>& history,
                         const Series& series, const Style& style,
                         const PlotPanel& panel,
                         std::vector<cv::Point>* obstacles) {
  // Validation: a line, broken where a value is missing or not finite.
  for (size_t i = 1; i < history.size(); ++i) {
    const std::optional<double>& v0 = series.validation[i - 1];
    const std::optional<double>& v1 = series.validation[i];
    if (!v0 || !v1 || !std::isfinite(*v0) || !std::isfinite(*v1)) continue;
    const cv::Point p0(panel.Column(history[i - 1].epoch), panel.Row(*v0));
    const cv::Point p1(panel.Column(history[i].epoch), panel.Row(*v1));
    cv::line(image, p0, p1, kCurveColor, style.line_thickness, cv::LINE_AA);
    const int samples = std::max(1, static_cast<int>(cv::norm(p1 - p0) / 6));
    for (int k = 0; k <= samples; ++k) {
      obstacles->push_back(p0 + (p1 - p0) * (static_cast<double>(k) / samples));
    }
  }
  // A lone validation value still shows, as a short tick of the line.
  for (size_t i = 0; i < history.size(); ++i) {
    const std::optional<double>& v = series.validation[i];
    if (!v || !std::isfinite(*v)) continue;
    const bool before = i > 0 && series.validation[i - 1] &&
                        std::isfinite(*series.validation[i - 1]);
    const bool after = i + 1 < history.size() && series.validation[i + 1] &&
                       std::isfinite(*series.validation[i + 1]);
    if (before || after) continue;
    const cv::Point p(panel.Column(history[i].epoch), panel.Row(*v));
    cv::line(image, p - cv::Point(style.marker_radius * 2, 0),
             p + cv::Point(style.marker_radius * 2, 0), kCurveColor,
             style.line_thickness, cv::LINE_AA);
    obstacles->push_back(p);
  }
}

// Training: dots.
void DrawTrainingDots(cv::Mat& image, const std::vector<EpochPoint>& history,
                      const Series& series, const Style& style,
                      const PlotPanel& panel,
                      std::vector<cv::Point>* obstacles) {
  for (size_t i = 0; i < history.size(); ++i) {
    if (!std::isfinite(series.train[i])) continue;
    const cv::Point p(panel.Column(history[i].epoch),
                      panel.Row(series.train[i]));
    cv::circle(image, p, style.marker_radius, kCurveColor, cv::FILLED,
               cv::LINE_AA);
    obstacles->push_back(p);
  }
}

// The corner of the axes `a` where a legend of size `legend` hides the
// fewest `obstacles` (matplotlib's "best", corners only; ties go to upper
// right, upper left, lower left, lower right).
cv::Rect BestLegendPlace(const cv::Rect& a, cv::Size legend,
                         const std::vector<cv::Point>& obstacles,
                         const Style& style) {
  const int inset = style.pad;
  const std::array<cv::Point, 4> corners = {
      cv::Point(a.x + a.width - inset - legend.width, a.y + inset),
      cv::Point(a.x + inset, a.y + inset),
      cv::Point(a.x + inset, a.y + a.height - inset - legend.height),
      cv::Point(a.x + a.width - inset - legend.width,
                a.y + a.height - inset - legend.height)};
  cv::Rect best;
  int best_hidden = -1;
  for (const cv::Point& corner : corners) {
    const cv::Rect r(corner, legend);
    int hidden = 0;
    for (const cv::Point& p : obstacles) {
      const cv::Rect grown(r.x - style.marker_radius, r.y - style.marker_radius,
                           r.width + 2 * style.marker_radius,
                           r.height + 2 * style.marker_radius);
      if (grown.contains(p)) ++hidden;
    }
    if (best_hidden < 0 || hidden < best_hidden) {
      best_hidden = hidden;
      best = r;
    }
  }
  return best;
}

// Legend, in the corner that hides the fewest points.
void DrawLegend(cv::Mat& image, const Series& series, bool any_validation,
                int tick_text_height, const Style& style,
                const PlotPanel& panel,
                const std::vector<cv::Point>& obstacles) {
  std::vector<std::pair<LegendKind, std::string>> entries = {
      {LegendKind::kMarker, series.train_label}};
  if (any_validation)
    entries.emplace_back(LegendKind::kLine, series.validation_label);
  if (!panel.boundary_columns.empty())
    entries.emplace_back(LegendKind::kDashed, "Stage boundary");
  const int sample_width = static_cast<int>(std::lround(28 * style.s));
  int text_width = 0;
  for (const auto& entry : entries) {
    text_width =
        std::max(text_width, TextSize(entry.second, style.tick_font, 1).width);
  }
  const int row_height = tick_text_height + style.pad;
  const cv::Size legend(
      style.pad + sample_width + style.pad + text_width + style.pad,
      style.pad / 2 + static_cast<int>(entries.size()) * row_height +
          style.pad / 2);
  const cv::Rect best = BestLegendPlace(panel.area, legend, obstacles, style);
  cv::rectangle(image, best, kWhite, cv::FILLED);
  cv::rectangle(image, best, kLegendFrame, 1, cv::LINE_8);
  for (size_t i = 0; i < entries.size(); ++i) {
    const int center_y = best.y + style.pad / 2 +
                         static_cast<int>(i) * row_height + row_height / 2;
    DrawLegendSample(image, entries[i].first,
                     cv::Point(best.x + style.pad, center_y), sample_width,
                     style);
    PutText(image, entries[i].second,
            cv::Point(best.x + style.pad + sample_width + style.pad,
                      center_y - tick_text_height / 2),
            style.tick_font, 1, kBlack);
  }
}

// One figure: axes, ticks, stage boundaries, curves, legend, labels.
PlotPanel DrawPanel(cv::Mat& image, cv::Rect box, const std::string& title,
                    const std::string& y_label,
                    const std::vector<EpochPoint>& history,
                    const Series& series) {
  const Style style(box.size());
  PlotPanel panel;
  panel.title = title;
  const bool any_validation = SetRanges(history, series, &panel);
  const PanelLayout layout = LayOutPanel(box, title, y_label, style, &panel);
  const cv::Rect& a = panel.area;

  // Title, centred over the axes.
  PutText(image, title,
          cv::Point(a.x + (a.width - layout.title_size.width) / 2,
                    box.y + style.pad),
          style.title_font, style.text_thickness, kBlack);
  DrawTicks(image, layout, style, panel);
  DrawAxisLabels(image, box, y_label, layout, style, panel);

  // What the legend should not hide: points along the curves, stage labels.
  std::vector<cv::Point> obstacles;
  DrawStageBoundaries(image, history, style, &panel, &obstacles);
  DrawValidationCurve(image, history, series, style, panel, &obstacles);
  DrawTrainingDots(image, history, series, style, panel, &obstacles);

  // The axes' frame, over the curves' ends.
  cv::rectangle(image, cv::Rect(a.x - 1, a.y - 1, a.width + 2, a.height + 2),
                kBlack, 1, cv::LINE_8);

  DrawLegend(image, series, any_validation, layout.tick_text_height, style,
             panel, obstacles);
  return panel;
}

}  // namespace

namespace {

absl::StatusOr<CurvesImage> Render(const std::vector<EpochPoint>& history,
                                   const PlotOptions& options) {
  if (history.empty())
    return absl::InvalidArgumentError("no finished epoch to plot");
  if (options.width < kMinPlotWidth || options.height < kMinPlotHeight ||
      options.width > kMaxPlotSide || options.height > kMaxPlotSide) {
    return absl::InvalidArgumentError(
        absl::StrFormat("plot size %dx%d is outside %dx%d to %dx%d",
                        options.width, options.height, kMinPlotWidth,
                        kMinPlotHeight, kMaxPlotSide, kMaxPlotSide));
  }
  std::vector<EpochPoint> sorted = history;
  std::stable_sort(sorted.begin(), sorted.end(),
                   [](const EpochPoint& a, const EpochPoint& b) {
                     return a.epoch < b.epoch;
                   });

  CurvesImage out;
  out.image = cv::Mat(options.height, options.width, CV_8UC3, kWhite);
  cv::Rect content(0, 0, options.width, options.height);
  if (!options.title.empty()) {
    const Style style(cv::Size(options.width, options.height));
    const cv::Size size =
        TextSize(options.title, style.title_font, style.text_thickness);
    PutText(out.image, options.title,
            cv::Point((options.width - size.width) / 2, style.pad),
            style.title_font, style.text_thickness, kBlack);
    const int used = style.pad + size.height + style.pad / 2;
    content = cv::Rect(0, used, options.width, options.height - used);
  }
  const bool side_by_side = options.width >= options.height;
  cv::Rect first = content, second = content;
  if (side_by_side) {
    first.width = content.width / 2;
    second.x = content.x + first.width;
    second.width = content.width - first.width;
  } else {
    first.height = content.height / 2;
    second.y = content.y + first.height;
    second.height = content.height - first.height;
  }

  Series accuracy, loss;
  accuracy.train_label = "Training acc";
  accuracy.validation_label = "Validation acc";
  loss.train_label = "Training loss";
  loss.validation_label = "Validation loss";
  for (const EpochPoint& p : sorted) {
    accuracy.train.push_back(p.accuracy);
    accuracy.validation.push_back(p.val_accuracy);
    loss.train.push_back(p.loss);
    loss.validation.push_back(p.val_loss);
  }
  out.panels.push_back(DrawPanel(out.image, first,
                                 "Training and validation accuracy", "Accuracy",
                                 sorted, accuracy));
  out.panels.push_back(DrawPanel(
      out.image, second, "Training and validation loss", "Loss", sorted, loss));
  return out;
}

}  // namespace

// OpenCV reports failures (memory) as cv::Exception; they become a Status.
absl::StatusOr<CurvesImage> RenderCurves(const std::vector<EpochPoint>& history,
                                         const PlotOptions& options) {
  try {
    return Render(history, options);
  } catch (const cv::Exception& e) {
    return absl::InternalError(
        absl::StrCat("drawing the plot failed: ", e.what()));
  }
}

absl::StatusOr<std::string> RenderCurvesPng(
    const std::vector<EpochPoint>& history, const PlotOptions& options) {
  absl::StatusOr<CurvesImage> curves = RenderCurves(history, options);
  if (!curves.ok()) return curves.status();
  std::vector<unsigned char> bytes;
  try {
    if (!cv::imencode(".png", curves->image, bytes)) {
      return absl::InternalError("OpenCV could not encode the plot as PNG");
    }
  } catch (const cv::Exception& e) {
    return absl::InternalError(
        absl::StrCat("encoding the plot as PNG failed: ", e.what()));
  }
  return std::string(bytes.begin(), bytes.end());
}

namespace {

// Shortest text that reads back as the same double ("0.1", "1e-05").
std::string Number(double v) {
  char buffer[64];
  const std::to_chars_result r =
      std::to_chars(buffer, buffer + sizeof(buffer), v);
  return std::string(buffer, r.ptr);
}

}  // namespace

std::string CurvesCsv(const std::vector<EpochPoint>& history) {
  std::string out =
      "epoch,stage,loss,accuracy,val_loss,val_accuracy,lr,seconds\n";
  for (const EpochPoint& p : history) {
    absl::StrAppend(&out, p.epoch, ",", p.stage + 1, ",", Number(p.loss), ",",
                    Number(p.accuracy), ",",
                    p.val_loss ? Number(*p.val_loss) : "", ",",
                    p.val_accuracy ? Number(*p.val_accuracy) : "", ",",
                    Number(p.learning_rate), ",", Number(p.seconds), "\n");
  }
  return out;
}

}  // namespace transferd::client
