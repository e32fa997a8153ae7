#include "common/trainer.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <numeric>

#include "autograd/ops.h"
#include "common/cli.h"
#include "common/interrupt.h"
#include "common/progress.h"
#include "nn/checkpoint.h"

namespace stgnn::experiments {

namespace {

// Round-trips a double through text exactly (std::to_string keeps 6 decimals only).
std::string to_exact_string(double v) {
  char buffer[40];
  std::snprintf(buffer, sizeof(buffer), "%.17g", v);
  return buffer;
}

}  // namespace

Evaluation evaluate_classifier(Module& model, const ForwardFn& forward, int64_t count,
                               int64_t batch_size, const FetchFn& fetch) {
  NoGradGuard no_grad;
  model.eval();
  Evaluation result;
  double total_loss = 0;
  int64_t correct = 0, correct5 = 0;
  for (int64_t start = 0; start < count; start += batch_size) {
    const int64_t n = std::min(batch_size, count - start);
    const LabelledBatch part = fetch(start, n);
    if (static_cast<int64_t>(part.labels.size()) != n) {
      throw ShapeError("evaluation: a batch of " + std::to_string(n) + " items came with " +
                       std::to_string(part.labels.size()) + " labels");
    }
    Tensor logits = forward(part.inputs);
    const int64_t classes = logits.size(1);
    const int64_t known = std::count_if(part.labels.begin(), part.labels.end(),
                                        [](int64_t label) { return label >= 0; });
    // cross_entropy averages over the labelled rows (label -1 is ignored).
    if (known > 0)
      total_loss +=
          cross_entropy(logits, IndexTensor(part.labels)).item() * static_cast<double>(known);
    result.labelled += known;
    Tensor probs = softmax(logits);
    const int64_t keep = std::min<int64_t>(5, classes);
    std::vector<int> order(static_cast<size_t>(classes));
    for (int64_t i = 0; i < n; ++i) {
      const float* p = probs.data() + i * classes;
      const int pred = static_cast<int>(std::max_element(p, p + classes) - p);
      result.predictions.push_back(pred);
      result.probabilities.push_back(p[pred]);
      std::iota(order.begin(), order.end(), 0);
      std::partial_sort(order.begin(), order.begin() + keep, order.end(),
                        [p](int a, int b) { return p[a] > p[b] || (p[a] == p[b] && a < b); });
      std::vector<std::pair<int, float>> top;
      for (int64_t k = 0; k < keep; ++k)
        top.emplace_back(order[static_cast<size_t>(k)], p[order[static_cast<size_t>(k)]]);
      const int64_t label = part.labels[static_cast<size_t>(i)];
      if (label >= 0) {
        correct += pred == label;
        correct5 += std::any_of(top.begin(), top.end(), [label](const std::pair<int, float>& t) {
          return t.first == label;
        });
      }
      result.top.push_back(std::move(top));
    }
  }
  model.train();
  if (result.labelled == 0) {
    result.loss = result.accuracy = result.top5 = NAN;
  } else {
    const double labelled = static_cast<double>(result.labelled);
    result.loss = total_loss / labelled;
    result.accuracy = static_cast<double>(correct) / labelled;
    result.top5 = static_cast<double>(correct5) / labelled;
  }
  return result;
}

std::string first_non_finite_gradient(const Module& model) {
  for (const auto& [name, p] : model.named_parameters()) {
    const Tensor g = p.grad();
    if (!g.defined()) continue;
    const float* d = g.data();
    for (int64_t i = 0; i < g.numel(); ++i) {
      if (!std::isfinite(d[i])) return name;
    }
  }
  return "";
}

ClassifierTrainer::ClassifierTrainer(Module& model, ForwardFn forward, RunDirectory& run,
                                     TrainerOptions options)
    : model_(model), forward_(std::move(forward)), run_(run), options_(std::move(options)) {
  if (options_.weight_decay > 0) {
    optimizer_ = std::make_unique<AdamW>(model_.named_parameters(), options_.lr, 0.9, 0.999, 1e-8,
                                         options_.weight_decay);
  } else {
    optimizer_ = std::make_unique<Adam>(model_.named_parameters(), options_.lr);
  }
  schedule_.kind = LrSchedule::parse_kind(options_.schedule);
  schedule_.base_lr = options_.lr;
  schedule_.warmup_steps =
      static_cast<int64_t>(std::llround(options_.warmup_epochs * options_.steps_per_epoch));
  schedule_.total_steps = options_.steps_per_epoch * options_.epochs;
  schedule_.min_lr = options_.lr * options_.min_lr_ratio;
  outcome_.best_val_loss = INFINITY;
}

std::string ClassifierTrainer::optimizer_name() const {
  return options_.weight_decay > 0 ? "AdamW" : "Adam";
}

std::map<std::string, std::string> ClassifierTrainer::checkpoint_meta(int64_t epoch,
                                                                      int64_t step) const {
  std::map<std::string, std::string> meta = options_.extra_metadata;
  meta["epoch"] = std::to_string(epoch);
  meta["step"] = std::to_string(step);
  meta["best_val_loss"] = to_exact_string(outcome_.best_val_loss);
  meta["best_epoch"] = std::to_string(outcome_.best_epoch);
  meta["trained_seconds"] = to_exact_string(outcome_.trained_seconds);
  meta["trained_items"] = std::to_string(outcome_.trained_items);
  meta["config"] = options_.config_json;
  // Running sums of an epoch cut short by an interrupt (zeros at an epoch boundary).
  const EpochProgress none;
  const EpochProgress& p = step > 0 ? partial_ : none;
  meta["epoch_loss_sum"] = to_exact_string(p.loss_sum);
  meta["epoch_correct"] = std::to_string(p.correct);
  meta["epoch_seen"] = std::to_string(p.seen);
  meta["epoch_data_seconds"] = to_exact_string(p.data_seconds);
  meta["epoch_seconds"] = to_exact_string(p.seconds);
  return meta;
}

void ClassifierTrainer::resume() {
  const std::string path = run_.file("last.safetensors");
  const auto meta = load_checkpoint(path, model_, optimizer_.get());
  const auto field = [&](const std::string& key) -> const std::string& {
    const auto it = meta.find(key);
    if (it == meta.end())
      throw FormatError("checkpoint '" + path + "': metadata has no '" + key + "'");
    return it->second;
  };
  try {
    start_epoch_ = std::stoll(field("epoch"));
    start_step_ = std::stoll(field("step"));
    outcome_.best_val_loss = std::stod(field("best_val_loss"));
    outcome_.best_epoch = std::stoll(field("best_epoch"));
    outcome_.trained_seconds = std::stod(field("trained_seconds"));
    // Checkpoints written before the trainer was shared call the counter "trained_videos".
    outcome_.trained_items =
        std::stoll(meta.count("trained_items") ? field("trained_items") : field("trained_videos"));
    // Older checkpoints lack the running sums of a cut epoch: that epoch's row then covers
    // only the batches after the resume.
    if (meta.count("epoch_seen")) {
      partial_.loss_sum = std::stod(field("epoch_loss_sum"));
      partial_.correct = std::stoll(field("epoch_correct"));
      partial_.seen = std::stoll(field("epoch_seen"));
      partial_.data_seconds = std::stod(field("epoch_data_seconds"));
      partial_.seconds = std::stod(field("epoch_seconds"));
    }
  } catch (const std::logic_error&) {
    throw FormatError("checkpoint '" + path + "': metadata holds a malformed number");
  }
  // Rows of the epochs completed so far (1-based epoch numbers up to start_epoch).
  run_.load_metrics(start_epoch_ + 1);
  std::printf("resuming %s at epoch %lld step %lld\n", run_.path().c_str(),
              static_cast<long long>(start_epoch_ + 1), static_cast<long long>(start_step_));
}

std::string ClassifierTrainer::kept_checkpoint() const {
  const std::string last = run_.file("last.safetensors");
  return std::filesystem::exists(last) ? "last good checkpoint kept in " + last
                                       : "no checkpoint was saved yet (it diverged in epoch 1)";
}

TrainingOutcome ClassifierTrainer::fit(const BatchProviderFn& train, int64_t val_count,
                                       const FetchFn& val) {
  const int64_t steps_per_epoch = options_.steps_per_epoch;
  TrainingOutcome& out = outcome_;
  for (int64_t epoch = start_epoch_; epoch < options_.epochs; ++epoch) {
    model_.train();
    const auto epoch_start = std::chrono::steady_clock::now();
    ProgressBar bar(options_.live,
                    "epoch " + std::to_string(epoch + 1) + "/" + std::to_string(options_.epochs),
                    steps_per_epoch);
    // A resumed epoch continues the running sums the interrupted run saved, so its row of
    // metrics.csv is the one an uninterrupted run would have written (seconds aside).
    const bool continued = epoch == start_epoch_ && start_step_ > 0;
    double loss_sum = continued ? partial_.loss_sum : 0;
    int64_t correct = continued ? partial_.correct : 0, seen = continued ? partial_.seen : 0;
    double data_seconds = continued ? partial_.data_seconds : 0;
    const double earlier_seconds = continued ? partial_.seconds : 0;
    const int64_t seen_before = seen;
    for (int64_t step = (epoch == start_epoch_ ? start_step_ : 0); step < steps_per_epoch; ++step) {
      const int64_t global_step = epoch * steps_per_epoch + step;
      const auto data_start = std::chrono::steady_clock::now();
      const LabelledBatch batch = train(epoch, step, global_step);
      data_seconds +=
          std::chrono::duration<double>(std::chrono::steady_clock::now() - data_start).count();
      const int64_t n = static_cast<int64_t>(batch.labels.size());
      optimizer_->lr = schedule_.lr_at(global_step);
      optimizer_->zero_grad();
      Tensor logits = forward_(batch.inputs);
      Tensor loss = cross_entropy(logits, IndexTensor(batch.labels));
      const float loss_value = loss.item();
      if (!std::isfinite(loss_value)) {
        bar.finish();
        std::fprintf(stderr, "diverged: the loss is %f at epoch %lld step %lld; %s\n", loss_value,
                     static_cast<long long>(epoch + 1), static_cast<long long>(step),
                     kept_checkpoint().c_str());
        out.exit_code = kExitDiverged;
        return out;
      }
      loss.backward();
      const std::string bad = first_non_finite_gradient(model_);
      if (!bad.empty()) {
        bar.finish();
        std::fprintf(stderr,
                     "diverged: the gradient of '%s' holds a NaN or infinity at epoch %lld step "
                     "%lld; %s\n",
                     bad.c_str(), static_cast<long long>(epoch + 1), static_cast<long long>(step),
                     kept_checkpoint().c_str());
        out.exit_code = kExitDiverged;
        return out;
      }
      if (options_.clip_norm > 0) clip_grad_norm(model_.parameters(), options_.clip_norm);
      optimizer_->step();
      loss_sum += loss_value * n;
      for (int64_t i = 0; i < n; ++i) {
        const float* row = logits.data() + i * logits.size(1);
        correct += (std::max_element(row, row + logits.size(1)) - row) ==
                   batch.labels[static_cast<size_t>(i)];
      }
      seen += n;
      const double elapsed =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - epoch_start).count();
      bar.update(step + 1, loss_sum / seen, static_cast<double>(correct) / seen,
                 seen / (earlier_seconds + elapsed));
      ++steps_this_run_;
      if (interrupted() ||
          (options_.stop_after_steps > 0 && steps_this_run_ >= options_.stop_after_steps)) {
        bar.finish();
        out.trained_seconds += elapsed;
        out.trained_items += seen - seen_before;
        partial_ = {loss_sum, correct, seen, data_seconds, earlier_seconds + elapsed};
        save_checkpoint(run_.file("last.safetensors"), model_, optimizer_.get(),
                        checkpoint_meta(epoch, step + 1));
        std::printf("interrupted: checkpoint saved; continue with  ./%s --resume %s\n",
                    options_.program.c_str(), run_.path().c_str());
        out.exit_code = kExitInterrupted;
        return out;
      }
    }
    bar.finish();
    const double epoch_seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - epoch_start).count();
    out.trained_seconds += epoch_seconds;
    out.trained_items += seen - seen_before;
    const Evaluation v =
        evaluate_classifier(model_, forward_, val_count, options_.eval_batch_size, val);
    EpochMetrics row;
    row.epoch = epoch + 1;
    row.train_loss = seen ? loss_sum / seen : NAN;
    row.train_acc = seen ? static_cast<double>(correct) / seen : NAN;
    row.val_loss = v.loss;
    row.val_acc = v.accuracy;
    row.seconds = earlier_seconds + epoch_seconds;
    row.items_per_s = seen / row.seconds;
    if (v.loss < out.best_val_loss) {
      out.best_val_loss = v.loss;
      out.best_epoch = epoch + 1;
      save_checkpoint(run_.file("best.safetensors"), model_, nullptr,
                      checkpoint_meta(epoch + 1, 0));
    }
    save_checkpoint(run_.file("last.safetensors"), model_, optimizer_.get(),
                    checkpoint_meta(epoch + 1, 0));
    run_.add_metrics(row);
    std::printf(
        "epoch %lld/%lld  train loss %.4f acc %.1f%%  val loss %.4f acc %.1f%%  %.1f %s/s "
        "(data %.0f%%)  %s\n",
        static_cast<long long>(epoch + 1), static_cast<long long>(options_.epochs), row.train_loss,
        100 * row.train_acc, row.val_loss, 100 * row.val_acc, row.items_per_s,
        options_.items.c_str(), 100 * data_seconds / std::max(1e-9, row.seconds),
        format_duration(row.seconds).c_str());
    std::fflush(stdout);
  }
  start_epoch_ = options_.epochs;
  start_step_ = 0;
  out.exit_code = kExitOk;
  return out;
}

}  // namespace stgnn::experiments
