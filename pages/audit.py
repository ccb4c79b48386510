import streamlit as st
st.title('Audit')
st.info('Coming next.')
