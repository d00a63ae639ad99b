"""The network: Transformers' module and attribute names, MLX's fused kernels."""

from .heads import (
    CausalLMOutputWithPast,
    LlamaForCausalLM,
    LlamaForQuestionAnswering,
    LlamaForSequenceClassification,
    LlamaForTokenClassification,
    QuestionAnsweringModelOutput,
    SequenceClassifierOutputWithPast,
    TokenClassifierOutput,
)
from .llama import BaseModelOutputWithPast, LlamaModel
from .open_llama import OpenLlamaForCausalLM, OpenLlamaForSequenceClassification, OpenLlamaModel

__all__ = [
    "BaseModelOutputWithPast",
    "CausalLMOutputWithPast",
    "LlamaForCausalLM",
    "LlamaForQuestionAnswering",
    "LlamaForSequenceClassification",
    "LlamaForTokenClassification",
    "LlamaModel",
    "OpenLlamaForCausalLM",
    "OpenLlamaForSequenceClassification",
    "OpenLlamaModel",
    "QuestionAnsweringModelOutput",
    "SequenceClassifierOutputWithPast",
    "TokenClassifierOutput",
]
