"""The network: Transformers' module and attribute names, MLX's fused kernels."""

from .heads import (
    LlamaForCausalLM,
    LlamaForQuestionAnswering,
    LlamaForSequenceClassification,
    LlamaForTokenClassification,
)
from .llama import LlamaModel
from .open_llama import OpenLlamaForCausalLM, OpenLlamaForSequenceClassification, OpenLlamaModel
from .outputs import (
    BaseModelOutputWithPast,
    CausalLMOutputWithPast,
    ModelOutput,
    QuestionAnsweringModelOutput,
    SequenceClassifierOutputWithPast,
    TokenClassifierOutput,
)

__all__ = [
    "BaseModelOutputWithPast",
    "CausalLMOutputWithPast",
    "LlamaForCausalLM",
    "LlamaForQuestionAnswering",
    "LlamaForSequenceClassification",
    "LlamaForTokenClassification",
    "LlamaModel",
    "ModelOutput",
    "OpenLlamaForCausalLM",
    "OpenLlamaForSequenceClassification",
    "OpenLlamaModel",
    "QuestionAnsweringModelOutput",
    "SequenceClassifierOutputWithPast",
    "TokenClassifierOutput",
]
