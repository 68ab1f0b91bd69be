// transferctl's training curves: PNG layout, stage boundaries, CSV.
#include "client/plot.h"

#include <string>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>

namespace transferd::client {
namespace {

using ::testing::HasSubstr;

// A frozen-base stage of 5 epochs, then 3 epochs of fine-tuning.
std::vector<EpochPoint> TwoStageHistory() {
  std::vector<EpochPoint> h;
  for (int i = 0; i < 8; ++i) {
    EpochPoint p;
    p.epoch = i + 1;
    p.stage = i < 5 ? 0 : 1;
    p.loss = 0.7 - 0.05 * i;
    p.accuracy = 0.5 + 0.05 * i;
    p.val_loss = 0.68 - 0.03 * i;
    p.val_accuracy = 0.52 + 0.04 * i;
    p.learning_rate = i < 5 ? 2e-5 : 1e-5;
    p.seconds = 10.5 + i;
    h.push_back(p);
  }
  return h;
}

bool IsBoundaryPixel(const cv::Vec3b& px) {
  return px == cv::Vec3b(static_cast<uchar>(kBoundaryColor[0]),
                         static_cast<uchar>(kBoundaryColor[1]),
                         static_cast<uchar>(kBoundaryColor[2]));
}

// Runs of boundary-coloured pixels down `column` inside `area`.
int DashRuns(const cv::Mat& image, int column, const cv::Rect& area,
             int* coloured) {
  int runs = 0;
  bool in_run = false;
  *coloured = 0;
  for (int y = area.y; y < area.y + area.height; ++y) {
    const bool on = IsBoundaryPixel(image.at<cv::Vec3b>(y, column));
    if (on) ++*coloured;
    if (on && !in_run) ++runs;
    in_run = on;
  }
  return runs;
}

TEST(PlotTest, PngDecodesAtTheRequestedSize) {
  PlotOptions options;
  options.width = 900;
  options.height = 400;
  options.title = "jobs/two-stage";
  absl::StatusOr<std::string> png = RenderCurvesPng(TwoStageHistory(), options);
  ASSERT_TRUE(png.ok()) << png.status();
  ASSERT_GT(png->size(), 8u);
  EXPECT_EQ(png->substr(1, 3), "PNG");
  const std::vector<uchar> bytes(png->begin(), png->end());
  const cv::Mat decoded = cv::imdecode(bytes, cv::IMREAD_COLOR);
  ASSERT_FALSE(decoded.empty());
  EXPECT_EQ(decoded.cols, 900);
  EXPECT_EQ(decoded.rows, 400);

  // The same pixels as the image RenderCurves returns.
  absl::StatusOr<CurvesImage> curves = RenderCurves(TwoStageHistory(), options);
  ASSERT_TRUE(curves.ok()) << curves.status();
  cv::Mat diff;
  cv::absdiff(decoded, curves->image, diff);
  EXPECT_EQ(cv::countNonZero(diff.reshape(1)), 0);
}

TEST(PlotTest, SideBySideFiguresWithDashedStageBoundary) {
  PlotOptions options;
  options.width = 1280;
  options.height = 480;
  absl::StatusOr<CurvesImage> curves = RenderCurves(TwoStageHistory(), options);
  ASSERT_TRUE(curves.ok()) << curves.status();
  const cv::Mat& image = curves->image;
  ASSERT_EQ(image.type(), CV_8UC3);
  ASSERT_EQ(curves->panels.size(), 2u);
  EXPECT_EQ(curves->panels[0].title, "Training and validation accuracy");
  EXPECT_EQ(curves->panels[1].title, "Training and validation loss");
  // Side by side: the loss axes start right of the accuracy axes.
  EXPECT_GT(curves->panels[1].area.x,
            curves->panels[0].area.x + curves->panels[0].area.width);

  const std::vector<EpochPoint> history = TwoStageHistory();
  for (const PlotPanel& panel : curves->panels) {
    SCOPED_TRACE(panel.title);
    EXPECT_TRUE(
        cv::Rect(0, 0, image.cols, image.rows).contains(panel.area.tl()));
    EXPECT_TRUE(cv::Rect(0, 0, image.cols + 1, image.rows + 1)
                    .contains(panel.area.br()));
    // One boundary, between epoch 5 (stage 1) and epoch 6 (stage 2).
    ASSERT_EQ(panel.boundary_columns.size(), 1u);
    const int column = panel.boundary_columns[0];
    EXPECT_EQ(column, panel.Column(5.5));
    EXPECT_GT(column, panel.Column(5));
    EXPECT_LT(column, panel.Column(6));
    // Dashed: many separate grey runs, covering a good part of the height
    // but not all of it.
    int coloured = 0;
    const int runs = DashRuns(image, column, panel.area, &coloured);
    EXPECT_GE(runs, 10);
    EXPECT_GT(coloured, panel.area.height / 3);
    EXPECT_LT(coloured, panel.area.height * 9 / 10);
    // Nothing grey-dashed in the column of epoch 3.
    int elsewhere = 0;
    EXPECT_LE(DashRuns(image, panel.Column(3), panel.area, &elsewhere), 1);
  }

  // Training markers in the curve colour at their data positions.
  const PlotPanel& accuracy = curves->panels[0];
  const PlotPanel& loss = curves->panels[1];
  const cv::Vec3b blue(static_cast<uchar>(kCurveColor[0]),
                       static_cast<uchar>(kCurveColor[1]),
                       static_cast<uchar>(kCurveColor[2]));
  int on_curve = 0;
  for (const EpochPoint& p : history) {
    if (image.at<cv::Vec3b>(accuracy.Row(p.accuracy),
                            accuracy.Column(p.epoch)) == blue) {
      ++on_curve;
    }
    if (image.at<cv::Vec3b>(loss.Row(p.loss), loss.Column(p.epoch)) == blue)
      ++on_curve;
  }
  EXPECT_EQ(on_curve, 16);
  // Axes ranges cover the data.
  EXPECT_LT(accuracy.y_min, 0.5);
  EXPECT_GT(accuracy.y_max, 0.85);
  EXPECT_LT(loss.y_min, 0.35);
  EXPECT_GT(loss.y_max, 0.7);
  EXPECT_LT(accuracy.x_min, 1);
  EXPECT_GT(accuracy.x_max, 8);
}

TEST(PlotTest, TallImagesStackTheFigures) {
  PlotOptions options;
  options.width = 500;
  options.height = 800;
  absl::StatusOr<CurvesImage> curves = RenderCurves(TwoStageHistory(), options);
  ASSERT_TRUE(curves.ok()) << curves.status();
  EXPECT_EQ(curves->image.cols, 500);
  EXPECT_EQ(curves->image.rows, 800);
  ASSERT_EQ(curves->panels.size(), 2u);
  EXPECT_GT(curves->panels[1].area.y,
            curves->panels[0].area.y + curves->panels[0].area.height);
}

TEST(PlotTest, SingleStageSingleEpochWithoutValidation) {
  EpochPoint p;
  p.epoch = 1;
  p.loss = 0.69;
  p.accuracy = 0.5;
  absl::StatusOr<CurvesImage> curves = RenderCurves({p}, PlotOptions());
  ASSERT_TRUE(curves.ok()) << curves.status();
  for (const PlotPanel& panel : curves->panels) {
    EXPECT_TRUE(panel.boundary_columns.empty());
    EXPECT_LT(panel.y_min, panel.y_max);
    EXPECT_LT(panel.x_min, 1);
    EXPECT_GT(panel.x_max, 1);
  }
}

TEST(PlotTest, EmptyHistoryAndBadSizesAreErrors) {
  absl::StatusOr<CurvesImage> empty = RenderCurves({}, PlotOptions());
  EXPECT_EQ(empty.status().code(), absl::StatusCode::kInvalidArgument);
  PlotOptions tiny;
  tiny.width = 100;
  tiny.height = 50;
  absl::StatusOr<CurvesImage> small = RenderCurves(TwoStageHistory(), tiny);
  EXPECT_EQ(small.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(small.status().message()), HasSubstr("100x50"));
}

TEST(PlotTest, CsvIsExact) {
  std::vector<EpochPoint> h = TwoStageHistory();
  h.resize(2);
  h[1].stage = 1;
  h[1].val_loss.reset();
  h[1].val_accuracy.reset();
  EXPECT_EQ(CurvesCsv(h),
            "epoch,stage,loss,accuracy,val_loss,val_accuracy,lr,seconds\n"
            "1,1,0.7,0.5,0.68,0.52,2e-05,10.5\n"
            "2,2,0.6499999999999999,0.55,,,2e-05,11.5\n");
  EXPECT_EQ(CurvesCsv({}),
            "epoch,stage,loss,accuracy,val_loss,val_accuracy,lr,seconds\n");
}

TEST(PlotTest, FromProtoKeepsMissingValidation) {
  google::protobuf::RepeatedPtrField<transferd::v1::EpochMetrics> history;
  transferd::v1::EpochMetrics* e = history.Add();
  e->set_epoch(3);
  e->set_stage(1);
  e->set_loss(0.25);
  e->set_accuracy(0.875);
  e->set_val_accuracy(0.75);
  e->set_learning_rate(1e-4);
  e->set_seconds(2);
  const std::vector<EpochPoint> points = EpochPointsFromProto(history);
  ASSERT_EQ(points.size(), 1u);
  EXPECT_EQ(points[0].epoch, 3);
  EXPECT_EQ(points[0].stage, 1);
  EXPECT_FALSE(points[0].val_loss.has_value());
  ASSERT_TRUE(points[0].val_accuracy.has_value());
  EXPECT_EQ(*points[0].val_accuracy, 0.75);
  EXPECT_EQ(CurvesCsv(points),
            "epoch,stage,loss,accuracy,val_loss,val_accuracy,lr,seconds\n"
            "3,2,0.25,0.875,,0.75,1e-04,2\n");
}

}  // namespace
}  // namespace transferd::client
