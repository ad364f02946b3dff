"""muxserve.engine"""
