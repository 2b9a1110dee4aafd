using Microsoft.Extensions.Options;
using MsdFleet.EdgeAgent.Gadget;
using MsdFleet.EdgeAgent.Gadget.Kvmd;
using MsdFleet.EdgeAgent.Mqtt;

namespace MsdFleet.EdgeAgent;

// The options source generator writes these: the data annotations on each options class plus its
// IValidatableObject.Validate, checked at start (ValidateOnStart), without reflection.

[OptionsValidator]
public sealed partial class AgentOptionsValidator : IValidateOptions<AgentOptions>;

[OptionsValidator]
public sealed partial class AgentMqttOptionsValidator : IValidateOptions<AgentMqttOptions>;

[OptionsValidator]
public sealed partial class GadgetOptionsValidator : IValidateOptions<GadgetOptions>;

[OptionsValidator]
public sealed partial class KvmdOptionsValidator : IValidateOptions<KvmdOptions>;
