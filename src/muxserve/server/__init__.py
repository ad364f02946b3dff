"""muxserve.server"""
