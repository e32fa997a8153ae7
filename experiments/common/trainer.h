// The training loop every classification experiment shares (shared/design/cli.md): Adam or
// AdamW (when weight decay > 0) with a warm-up + cosine / step / constant schedule, gradient
// clipping, a progress bar with ETA, one validation pass per epoch, best.safetensors by
// validation loss, last.safetensors every epoch, metrics.csv + curves.svg, --resume that
// continues exactly where a run stopped (mid-epoch after Ctrl-C), exit code 130 after an
// interrupt and 2 when the loss or a gradient stops being finite.
//
// The program owns the model and the data: it hands the trainer a forward function and a
// batch provider, and keeps everything else (what is tested after training, predictions).
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "autograd/tensor.h"
#include "common/run_dir.h"
#include "nn/module.h"
#include "nn/optim.h"

namespace stgnn::experiments {

// A batch of items with their class ids; label -1 means unknown (evaluation only).
struct LabelledBatch {
  Tensor inputs;                // [B, ...] what the forward function takes
  std::vector<int64_t> labels;  // [B]
};

// inputs [B, ...] -> logits [B, classes].
using ForwardFn = std::function<Tensor(const Tensor& inputs)>;
// Items start .. start + count - 1 of a fixed set.
using FetchFn = std::function<LabelledBatch(int64_t start, int64_t count)>;
// The training batch of step `step` of epoch `epoch` (global_step = epoch * steps + step). It
// must be a pure function of its arguments (and the seed), so a resumed run sees the batches
// an uninterrupted run would have seen.
using BatchProviderFn =
    std::function<LabelledBatch(int64_t epoch, int64_t step, int64_t global_step)>;

struct Evaluation {
  // Over the items whose label is known; NaN when there is none.
  double loss = 0, accuracy = 0, top5 = 0;
  int64_t labelled = 0;
  std::vector<int> predictions;                         // [N] arg-max class
  std::vector<float> probabilities;                     // [N] its softmax probability
  std::vector<std::vector<std::pair<int, float>>> top;  // [N][min(5, classes)], best first
};

// Evaluates `count` items fetched `batch_size` at a time, in eval mode without gradients (the
// model is back in training mode afterwards).
Evaluation evaluate_classifier(Module& model, const ForwardFn& forward, int64_t count,
                               int64_t batch_size, const FetchFn& fetch);

// The first parameter whose gradient holds a NaN or infinity, or "" when all are finite.
std::string first_non_finite_gradient(const Module& model);

struct TrainerOptions {
  std::string program;          // named in the "continue with ./<program> --resume" hint
  std::string items = "items";  // what an item is called in the per-epoch line ("videos")
  int64_t epochs = 1;
  int64_t steps_per_epoch = 1;
  double lr = 1e-3;
  double weight_decay = 0;  // > 0: AdamW, else Adam
  std::string schedule = "cosine";
  double warmup_epochs = 1.0;
  double min_lr_ratio = 0.02;  // cosine floor as a fraction of lr
  double clip_norm = 5.0;      // 0: no clipping
  int64_t eval_batch_size = 100;
  bool live = false;  // progress bar (else one line per epoch)
  // Testing aid: after this many steps of this process, act as if Ctrl-C arrived (0 = never).
  int64_t stop_after_steps = 0;
  // Stored in every checkpoint's metadata: "config" (the run's settings, JSON) and any extra
  // entries the program needs to read a checkpoint back (e.g. label names).
  std::string config_json;
  std::map<std::string, std::string> extra_metadata;
};

struct TrainingOutcome {
  int exit_code = 0;  // kExitOk, kExitDiverged or kExitInterrupted
  int64_t best_epoch = -1;
  double best_val_loss = 0;
  double trained_seconds = 0;
  int64_t trained_items = 0;
  double items_per_s() const { return trained_seconds > 0 ? trained_items / trained_seconds : 0; }
};

class ClassifierTrainer {
 public:
  // Builds the optimiser over model.named_parameters() and the learning-rate schedule.
  ClassifierTrainer(Module& model, ForwardFn forward, RunDirectory& run, TrainerOptions options);

  // Loads the run's last.safetensors (model, optimiser, epoch, step, best epoch, counters) and
  // its metrics.csv rows of completed epochs, and prints "resuming <run> at epoch E step S".
  void resume();

  // Trains from the current position (epoch 0, or where resume() left it) to options.epochs,
  // validating on `val_count` items fetched by `val` after every epoch.
  TrainingOutcome fit(const BatchProviderFn& train, int64_t val_count, const FetchFn& val);

  // "Adam" or "AdamW".
  std::string optimizer_name() const;

 private:
  std::map<std::string, std::string> checkpoint_meta(int64_t epoch, int64_t step) const;
  // "last good checkpoint kept in <path>", or that there is none yet.
  std::string kept_checkpoint() const;

  // Running sums of the epoch an interrupt cut short.
  struct EpochProgress {
    double loss_sum = 0;
    int64_t correct = 0, seen = 0;
    double data_seconds = 0, seconds = 0;
  };

  Module& model_;
  ForwardFn forward_;
  RunDirectory& run_;
  TrainerOptions options_;
  std::unique_ptr<Optimizer> optimizer_;
  LrSchedule schedule_;
  int64_t start_epoch_ = 0, start_step_ = 0;
  TrainingOutcome outcome_;
  EpochProgress partial_;
  int64_t steps_this_run_ = 0;
};

}  // namespace stgnn::experiments
