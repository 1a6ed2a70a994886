// `lowbit quantize` methods rtn, gptq, autoclip and autoclip+gptq (calib/group_methods.hpp): they fill
// any group-grid format of the registry (uniform and NF3 grids) and share one option group.
#include <memory>
#include <string>

#include <lowbit/calib/group_methods.hpp>

#include "quantize_method.hpp"

namespace lowbit_method_group {

using namespace lowbit;

const cli::QuantizeMethodRegistration registration{cli::QuantizeMethodSpec{
    {"rtn", "gptq", "autoclip", "autoclip+gptq"},
    "round-to-nearest, GPTQ (Hessian-aware), AutoClip (BitDistiller's clipping search), AutoClip then GPTQ: "
    "group-grid formats",
    [](CLI::App& app) -> cli::QuantizeMethodFactory {
      auto o = std::make_shared<calib::GroupMethodOptions>();
      auto* g = app.add_option_group("GPTQ and AutoClip", "options of --method rtn, gptq, autoclip, autoclip+gptq");
      g->add_option("--damp", o->gptq.percdamp, "GPTQ: dampening, fraction of mean diag(H)")->capture_default_str();
      g->add_option("--gptq-block-size", o->gptq.block_size, "GPTQ: columns per lazy-update block")
          ->capture_default_str();
      g->add_flag("--act-order", o->gptq.act_order, "GPTQ: quantize columns by decreasing diag(H) (implies static groups)");
      g->add_flag("--static-groups", o->gptq.static_groups, "GPTQ: fit group ranges on the unmodified weights");
      g->add_option("--autoclip-grid", o->autoclip.n_grid, "AutoClip: shrink factors tried per group")
          ->capture_default_str();
      g->add_option("--autoclip-max-shrink", o->autoclip.max_shrink, "AutoClip: largest fraction of the range removed")
          ->capture_default_str();
      g->add_flag("--autoclip-qk", o->autoclip_qk, "AutoClip: also clip q/k projections (BitDistiller skips them)");
      return [o](const std::string& name) {
        cli::QuantizeMethod m;
        m.method = calib::group_method(name, *o);
        return m;
      };
    }}};

}  // namespace lowbit_method_group
