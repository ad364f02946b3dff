"""muxserve.placement"""
