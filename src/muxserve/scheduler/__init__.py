"""muxserve.scheduler"""
