"""muxserve.bench: an open-loop HTTP load generator for OpenAI-compatible endpoints.

Requests come from ``muxserve.sim``'s workload and trace generators (so the same seed gives the
same request list as ``muxserve simulate``) and the result is ``muxserve.sim.metrics``'s schema.
"""
