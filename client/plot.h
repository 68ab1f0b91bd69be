// Training curves for `transferctl jobs plot`: the Keras book's two figures,
// "Training and validation accuracy" and "Training and validation loss" per
// epoch, drawn with OpenCV, and the same numbers as CSV. Pure functions of a
// history; presentation only, nothing here talks to the server.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include <opencv2/core.hpp>

#include "absl/status/statusor.h"
#include "transferd/v1/common.pb.h"

namespace transferd::client {

// One finished epoch, as in transferd.v1.EpochMetrics.
struct EpochPoint {
  // 1-based epoch number within the whole job.
  int epoch = 0;
  // 0-based stage index.
  int stage = 0;
  double loss = 0;
  double accuracy = 0;
  // Absent without a validation split.
  std::optional<double> val_loss;
  std::optional<double> val_accuracy;
  double learning_rate = 0;
  double seconds = 0;
};

std::vector<EpochPoint> EpochPointsFromProto(
    const google::protobuf::RepeatedPtrField<transferd::v1::EpochMetrics>&
        history);

struct PlotOptions {
  // Size of the whole image in pixels. The two figures sit side by side
  // when width >= height, else one above the other.
  int width = 1280;
  int height = 480;
  // Drawn above both figures when not empty (the job's name).
  std::string title;
};

// Accepted image sizes (each side).
inline constexpr int kMinPlotWidth = 320;
inline constexpr int kMinPlotHeight = 240;
inline constexpr int kMaxPlotSide = 8192;

// Where one figure's data landed, so callers (tests) can find things in it.
struct PlotPanel {
  // "Training and validation accuracy" or "... loss".
  std::string title;
  // The axes' inner area in image pixels.
  cv::Rect area;
  // Data ranges of the axes.
  double x_min = 0, x_max = 1, y_min = 0, y_max = 1;
  // Image columns of the dashed stage-boundary lines, left to right.
  std::vector<int> boundary_columns;

  int Column(double epoch) const;
  int Row(double value) const;
};

struct CurvesImage {
  // 8-bit BGR, options.width x options.height.
  cv::Mat image;
  // Accuracy first, then loss.
  std::vector<PlotPanel> panels;
};

// Colours (BGR): training markers and validation line are blue like the
// book's 'bo' and 'b'; stage boundaries are grey dashes.
inline const cv::Scalar kCurveColor(255, 0, 0);
inline const cv::Scalar kBoundaryColor(128, 128, 128);

// Draws `history` (any order; sorted by epoch here). A stage boundary sits
// halfway between the last epoch of a stage and the first of the next.
// INVALID_ARGUMENT for an empty history or a size outside the limits.
absl::StatusOr<CurvesImage> RenderCurves(const std::vector<EpochPoint>& history,
                                         const PlotOptions& options);

// RenderCurves encoded as PNG.
absl::StatusOr<std::string> RenderCurvesPng(
    const std::vector<EpochPoint>& history, const PlotOptions& options);

// "epoch,stage,loss,accuracy,val_loss,val_accuracy,lr,seconds" and one row
// per epoch in the given order: stage 1-based (as `jobs show` prints it),
// numbers in their shortest exact form, an empty field for a missing
// validation value.
std::string CurvesCsv(const std::vector<EpochPoint>& history);

}  // namespace transferd::client
