"""IVR: flows as YAML (schema), checked before they go live (loader, graph), run per call (engine)
through the CallControl protocol (control), with backends as small protocols (services)."""

from callcenter.ivr.control import CallControl, CallerHangup
from callcenter.ivr.engine import CallInfo, FlowResult, FlowRunner
from callcenter.ivr.graph import FlowContext
from callcenter.ivr.loader import FlowLoadError, check_flows, load_flow, load_flow_text, load_flows
from callcenter.ivr.schema import Flow, flow_json_schema
from callcenter.ivr.services import Services
from callcenter.ivr.source import FlowError

__all__ = [
    "CallControl",
    "CallInfo",
    "CallerHangup",
    "Flow",
    "FlowContext",
    "FlowError",
    "FlowLoadError",
    "FlowResult",
    "FlowRunner",
    "Services",
    "check_flows",
    "flow_json_schema",
    "load_flow",
    "load_flow_text",
    "load_flows",
]
