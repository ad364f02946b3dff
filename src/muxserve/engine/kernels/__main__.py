"""`python -m muxserve.engine.kernels`: build the fused CPU kernels now (install.sh does)."""

from muxserve.engine.kernels import available

print("muxserve fused CPU kernels:", "built" if available() else "unavailable (see warning)")
