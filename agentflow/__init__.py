"""AgentFlow: declarative JSON workflows -> LangGraph multi-agent graphs."""

__version__ = "0.1.0"
