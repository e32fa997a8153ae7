// RSTG: Recurrent Space-time Graph neural network (Nicolicioiu, Duta, Leordeanu, NeurIPS 2019),
// and the two baselines of its SyncMNIST table. See shared/design/rstg.md.
//
// A video [B, T, C, H, W] goes through a per-frame conv backbone to a map [B*T, F, h, w];
// area pooling onto the cells of several grids gives one node per cell (default 3x3 + 2x2 +
// 1x1 = 14 nodes; or, not in the paper, detector nodes that pool under learnt heat maps),
// batch-normalised. Per frame, K space stages (send / attention gather /
// update over the region graph) alternate with time stages (an LSTM or GRU per node, weights
// shared over nodes and stages, one hidden state per stage), and a final time stage with its
// own cell. The readout averages the final stage's outputs over time, sums over nodes and
// applies a linear classifier.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "graph/graph.h"
#include "nn/module.h"
#include "nn/recurrent.h"

namespace stgnn {

enum class RstgVariant {
  kSpaceOnly,      // space stages only, frames independent, averaged over time
  kTimeOnly,       // recurrence per node, no messages between nodes
  kHomogeneous,    // one space-time graph (time edges i@t-1 -> i@t), no recurrent unit
  kOneTempStage,   // K space stages per frame, one (final) time stage
  kAllTempStages,  // a time stage before every space stage, plus the final one (the full model)
  kPositional,     // all-temp-stages with positional Gaussian maps at the input of send
  kMeanLstm,       // baseline: spatial mean of the frame map, LSTM over frames
  kConvLstm,       // baseline: flattened frame map, LSTM over frames
};

RstgVariant parse_rstg_variant(const std::string& name);
std::string rstg_variant_name(RstgVariant variant);
std::vector<std::string> rstg_variant_names();
// False for the variants without a space stage (time-only and the two baselines): they read
// none of the space-stage settings (stage_norm, stage_residual, fully_connected,
// attention_over_all_nodes), so changing those leaves their parameters and outputs alone.
bool rstg_variant_has_space_stages(RstgVariant variant);

struct RstgConfig {
  RstgVariant variant = RstgVariant::kAllTempStages;
  int64_t in_channels = 1;
  int64_t image_size = 64;
  std::vector<int64_t> backbone_channels = {32, 64, 128};  // paper: 512, 512, 512
  bool backbone_batch_norm = true;  // BatchNorm2d after each conv (not in the paper)
  // The backbone also sees the frame difference F_t - F_{t-1} (zero for the first frame) as
  // extra input channels: a first layer with a temporal kernel of 2, the smallest "3D
  // backbone" of the paper's "2D (or 3D) backbone". Not in the released SyncMNIST model. The
  // 6x6 map and area-average nodes blur where a digit is inside its cell, so frame-to-frame
  // jumps are hard to see from node features alone; a difference image shows them locally.
  bool motion_input = false;
  // Each node also gets the first moments of the map over its cell: for every channel, the
  // area mean of a_c * x and a_c * y (map coordinates scaled to [-1, 1]) besides the mean of
  // a_c, so a node's features say where inside the frame its activation sits, not just how much
  // there is. Not in the paper: an area average alone hides a digit's jump inside a cell, and
  // synchrony is a relation between two digits' positions over time.
  bool position_moments = false;
  // Extra conv 3x3 blocks (padding 1, BatchNorm, ReLU, no pool) after the last pooled block,
  // as wide as it. Not in the paper. Three conv+pool blocks give each unit of the final map a
  // receptive field of 22 pixels of a 64-pixel frame: one digit (18 pixels), never two apart, so
  // no node feature can describe where two digits sit relative to each other - and the
  // synchronised pair is the one whose relative position stays fixed. Each context block
  // widens the field by two map cells (16 pixels).
  int64_t context_convs = 0;
  // Each node (the baselines: each frame) also gets a histogram of where its pixels moved since
  // the previous frame and its mean move (node_motion_features, radius kNodeMotionRadius): the
  // motion a two-stream video network would read from optical flow. Not in the paper. The
  // synchronised pair is the pair of digits whose moves agree at every frame; the backbone's pooled
  // maps hide moves of a few pixels, a histogram names them.
  bool node_motion = false;
  // With node_motion: each node (the baselines: each frame) also gets how much of its motion
  // histogram sits on the frame's dominant move, the most voted bin of the whole frame's
  // histogram (node_motion_features' agreement columns). Not in the paper, and not a learnt
  // relation: a hand-made cue. In 3Sync two of the three digits share every move, so the
  // dominant move is mostly theirs and the cue points at the synchronised pair (a numpy check on
  // 200 test videos: the two digits that agree with it in most frames are the pair in 85%). It
  // measures how far the model gets once the relation is given rather than learnt.
  bool motion_agreement = false;
  // With node_motion: every edge j -> i of a space stage also gets the cosine of the two ends'
  // motion histograms (how alike they move, 0 when either is still), added to the attention
  // score and to the send MLP's first layer with learnt weights. Not in the paper. A generic
  // pairwise input - "you move like me" - that the space stage still has to learn to use, unlike
  // motion_agreement, which names the frame's dominant move. With detector nodes the histograms
  // are pooled under the heat maps, so the cosine's gradient reaches the detectors too.
  bool motion_similarity = false;
  // 0: region nodes (the paper's, on `grids`). N > 0: N detector nodes instead (not in the
  // paper). Detector k has its own heat map over the final map's positions (a linear read-out of
  // each position's features, softmax over positions); its node is the heat-weighted mean of the
  // features (and, with node_motion, of the per-position move histograms), plus the expected
  // heat (how sure the detector is) and a one-hot of k. The graph joins every pair of nodes. A
  // region node mixes parts of up to three digits, so "this node moves like that one" mostly
  // compares a digit with itself; a detector can follow one digit wherever it goes, like the
  // idealised test's per-digit nodes. On SyncMNIST, 10: a video's digits have distinct classes,
  // so one detector per class can own one digit.
  int64_t detector_nodes = 0;
  int64_t node_dim = 128;  // D; a linear projection is added when != last channel
  std::vector<int64_t> grids = {3, 2, 1};
  int64_t stages = 3;            // K
  std::string cell = "lstm";     // time stage: "lstm" or "gru"
  bool fully_connected = false;  // region graph: all pairs instead of overlap / shared side
  bool attention_over_all_nodes =
      false;  // released-code attention: softmax over all nodes, +1 on edges
  int64_t classes = 46;
  float positional_std = 2.0f;  // Gaussian maps, in map cells
  // LayerNorm on every space stage's output (not in the paper). Without it the interleaved
  // space and time stages shrink gradients by ~10^4 between the classifier and the backbone at
  // PyTorch's default initialisation (measured), and the full model barely leaves chance.
  bool stage_norm = false;
  // Residual space stage (not in the paper, whose update replaces the node features):
  // v_i = x_i + MLP([x_i ; g_i]), before the stage norm. The identity path lets a node keep
  // what its time stages learnt while the messages are still noise; measured on 3Sync at the
  // default preset, the released (replacing) update learns slower than no space stage at all.
  bool stage_residual = false;
  // Dot-product attention in the gather (not in the paper): a_ji = softmax_j (Q x_i . K x_j) /
  // sqrt(D) instead of LeakyReLU(w1 . x_i + w2 . x_j). The paper's score is a sum of one term
  // per node, so it ranks every neighbour j the same for every receiver i: it cannot prefer a
  // neighbour *like* the receiver (one that moves the same way, say). A product of the two can.
  bool dot_attention = false;
  // Residual internal time stages (not in the paper): v = x + LSTM(x) for the K time stages
  // before the space stages (the final time stage is unchanged). A space stage compares
  // neighbours frame by frame; behind a plain recurrent cell it sees a gated mix of each node's
  // history instead of the frame's own features. Measured on idealised SyncMNIST (perfect digit
  // identities and moves as node inputs, bench/torch/ideal_sync.py), the plain full model does
  // not learn synchrony in 90,000 videos and the residual one does in about 25,000.
  bool time_residual = false;
  // "released": every conv, linear and recurrent weight Glorot-uniform and every bias zero, as
  // in the authors' TensorFlow code (tf.layers and CudnnLSTM defaults). "torch": PyTorch's
  // defaults (U(-1/sqrt(fan_in), 1/sqrt(fan_in))), which shrink the signal about 2.4x per
  // layer where Glorot keeps it near 1 (ReLU aside) - through the 15+ layers between the
  // classifier and the backbone that is the difference between learning and not.
  std::string init = "released";
};

// Shapes through the model, for a config (checks the backbone leaves a map of at least 1x1).
int64_t rstg_map_size(const RstgConfig& config);

// The node inputs of a frame map: map [M, F, h, w] -> [M, cells, F], the area mean of every
// channel a over each cell; with position_moments [M, cells, 3F]: the means of a, a * row and
// a * col, pixel centres scaled to [-1, 1] (a, then the row moments, then the column moments).
Tensor region_node_inputs(const Tensor& map, const std::vector<Cell>& cells, bool position_moments);

// The node inputs of RstgConfig::detector_nodes: map [M, F, h, w], heat [M, n, h*w] (one
// logit per detector and map position, positions row-major), motion [M, h*w, bins] (the
// per-position move histograms) or undefined -> [M, n, F + 1 + n (+ bins)]. Node k: the
// softmax-over-positions weighted mean of the map's features, the expected heat under those
// weights (high when detector k is sure of what it found), a one-hot of k (the weights after the
// nodes are shared, so a node says which detector it is), then the weighted mean of the motion.
Tensor detector_node_inputs(const Tensor& map, const Tensor& heat, const Tensor& motion);

// SyncMNIST's jumps are under 10 canvas pixels of 100: under 3.2 pixels of a halved 64x64 frame.
constexpr int64_t kNodeMotionRadius = 4;
constexpr int64_t kNodeMotionBins = (2 * kNodeMotionRadius + 1) * (2 * kNodeMotionRadius + 1);

// Where each node's pixels moved since the previous frame: a flow-like node input (not in the
// paper). video [B, T, C, H, W] in [0, 1] -> [B*T, cells, (2R+1)^2], R = radius. Both frames are
// halved (2x2 means, channels averaged); each inked pixel p of frame t votes, with its ink, for
// the move d in [-R, R]^2 whose 3x3 patch of frame t-1 around p - d matches its own best (least
// squared difference, ties to the shorter move); a node's histogram is the area mean of the
// votes over its cell, the cells given in units of a map_size x map_size map laid over the
// frame. Zero for each video's first frame. A function of the input only: no gradient.
Tensor node_motion_histograms(const Tensor& video, const std::vector<Cell>& cells, int64_t map_size,
                              int64_t radius);
// histograms [M, nodes, (2R+1)^2] -> [M, nodes, (2R+1)^2 + 3]: each histogram, then its mass
// and its mean move (rows, then columns) as a fraction of R (zero where nothing moved). The mean
// puts a node's move in two numbers, so "the same move" is a small difference, not a match
// between 81 bins. The node input of RstgConfig::node_motion.
// With frame_histograms [M, 1, (2R+1)^2] (each frame's whole-frame histogram) two agreement
// columns follow: the node's votes on the frame's dominant move (its most voted bin; the first
// of equal ones) as a share of the node's mass, then as they are (zeros where the node or the
// frame has no votes) -> [M, nodes, (2R+1)^2 + 5]. RstgConfig::motion_agreement.
Tensor node_motion_features(const Tensor& histograms, int64_t radius,
                            const Tensor& frame_histograms = Tensor());
constexpr int64_t kNodeMotionFeatures = kNodeMotionBins + 3;
constexpr int64_t kMotionAgreementFeatures = 2;

// One space stage: send MLP over edges, attention gather, update MLP. Weights shared by all
// stages and frames.
class SpaceStage : public Module {
 public:
  // layer_norm: LayerNorm on the stage's output (see RstgConfig::stage_norm); residual: add
  // the input to the update's output (RstgConfig::stage_residual); dot_attention: see
  // RstgConfig::dot_attention; edge_dim: per-edge input features (RstgConfig::motion_similarity),
  // 0 for none.
  SpaceStage(int64_t dim, int64_t position_dim, bool layer_norm, bool residual, bool dot_attention,
             Rng& rng, int64_t edge_dim = 0);
  // x [N, D] node features, positions [N, P] or undefined, edge_features [E, edge_dim] or
  // undefined -> [N, D]; optionally returns the attention weights [E, 1] (for pictures). An edge
  // attribute, when the graph has one, is added to the attention score (the released code's +1
  // on region-graph edges); edge features add e W_score to the score and e W_send to the send
  // MLP's first layer.
  Tensor forward(const Tensor& x, const Tensor& positions, const Graph& graph,
                 Tensor* attention = nullptr, const Tensor& edge_features = Tensor());

  std::shared_ptr<Linear> send_source, send_target, send_out;  // send MLP, first layer split
  std::shared_ptr<Linear> score_source, score_target;          // scalar attention projections
  std::shared_ptr<Linear> query, key;             // dot attention (score_* are null then)
  std::shared_ptr<Linear> edge_score, edge_send;  // edge features (null without)
  Tensor gather_bias;
  std::shared_ptr<MLP> update;
  std::shared_ptr<LayerNorm> output_norm;  // null without stage_norm

 private:
  int64_t dim_;
  bool residual_;
};

class Rstg : public Module {
 public:
  Rstg(const RstgConfig& config, Rng& rng = global_rng());
  // video [B, T, C, H, W] -> logits [B, classes].
  Tensor forward(const Tensor& video);
  // Attention weights of the last forward for the first video of the batch: per frame, per
  // stage, per edge of the 14-node graph ([T][K][E0]); filled when record_attention is set
  // (empty for the variants without space stages: time-only and the baselines).
  bool record_attention = false;
  std::vector<std::vector<std::vector<float>>> last_attention;

  const RstgConfig& config() const { return config_; }
  const Graph& frame_graph() const { return frame_graph_; }
  // The region nodes' cells; with detector nodes, the final map's positions (one cell each),
  // over which the detectors' heat maps and the motion histograms are laid.
  const std::vector<Cell>& cells() const { return cells_; }
  // Nodes per frame: cells().size() for region nodes, config().detector_nodes otherwise.
  int64_t nodes_per_frame() const;

 private:
  Tensor backbone_forward(const Tensor& frames);  // [B*T, C, H, W] -> [B*T, F, h, w]
  // map, motion histograms [B*T, nodes, bins] or undefined -> [B*T, nodes, D]
  // motion_bins, when given, receives the nodes' motion histograms before the node norm,
  // [M, nodes, kNodeMotionBins] (pooled under the heat maps for detector nodes).
  Tensor nodes_from_map(const Tensor& map, const Tensor& motion, Tensor* motion_bins = nullptr);
  // graph holds `frames` frames of `batch` videos, laid out [frames, batch, ...]; their
  // attention is recorded as frames frame .. frame + frames - 1.
  // edge_features: [E, 1] motion cosines (motion_similarity) or undefined.
  Tensor space(const Tensor& x, const Graph& graph, const Tensor& positions,
               const Tensor& edge_features, int64_t frame, int64_t stage, int64_t frames = 1,
               int64_t batch = 1);

  RstgConfig config_;
  std::vector<Cell> cells_;
  Graph frame_graph_;  // the region graph of one frame
  std::shared_ptr<Sequential> backbone_;
  std::shared_ptr<BatchNorm> node_norm_;
  std::shared_ptr<Linear> node_projection_;
  std::shared_ptr<Linear> detector_;  // map features -> one heat per detector (detector nodes)
  std::shared_ptr<SpaceStage> space_;
  std::shared_ptr<RecurrentCell> time_cell_, final_cell_;
  std::shared_ptr<Linear> classifier_;
  Tensor positions_;  // [nodes, 36] Gaussian maps (positional variant)
  // Batched graphs, rebuilt when the batch size changes.
  int64_t cached_batch_ = -1, cached_frames_ = -1;
  Graph frames_graph_;     // T * B copies of the frame graph
  Graph spacetime_graph_;  // homogeneous variant: plus time edges
};

}  // namespace stgnn
